//! Names of nodes, links and interfaces: one rule, checked once, where the name enters.
//!
//! A [`Name`] is 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, and there is no other
//! way to make one than parsing: `"h0-h1".parse()`, `Name::try_from(string)`, or
//! deserializing (config files, state files, control messages, handshake messages), which
//! runs the same parser. Code that holds a `Name` never checks it again.
//!
//! Two narrower rules sit on top where they apply: a Linux device name is at most
//! [`MAX_DEVICE_NAME_LEN`] bytes (the topology checks it), and link names starting with
//! `.` are the daemon's own ([`Name::is_reserved`]; `.probe` names bandwidth probes).
//!
//! Names come from the network, so a [`NameError`] quotes at most [`MAX_NAME_LEN`]
//! characters of the text, escaped.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name, in bytes (the handshake's length prefix and Linux's limits are well
/// above it).
pub const MAX_NAME_LEN: usize = 64;

/// Longest Linux network device name, in bytes (`IFNAMSIZ` less the terminating NUL).
pub const MAX_DEVICE_NAME_LEN: usize = 15;

/// A valid node, link or interface name (see the module docs). Compares, orders and
/// hashes as its text, so maps keyed by `Name` are looked up with a `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why text is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The text is empty.
    #[error("name is empty")]
    Empty,
    /// The text is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name \"{shown}\" is {len} bytes long (at most {MAX_NAME_LEN})")]
    TooLong {
        /// The start of the text, escaped (see [`NameError`]).
        shown: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The text has a character outside `[A-Za-z0-9._-]`.
    #[error("name \"{shown}\" contains {bad:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar {
        /// The start of the text, escaped.
        shown: String,
        /// The first character not allowed.
        bad: char,
    },
}

/// At most [`MAX_NAME_LEN`] characters of `text`, `…` where it was cut, escaped so that
/// control characters and bidirectional overrides print as escapes.
fn shown(text: &str) -> String {
    let mut s: String = text.chars().take(MAX_NAME_LEN).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s.escape_debug().to_string()
}

/// Checks `text` against the rule.
fn check(text: &str) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    if text.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            shown: shown(text),
            len: text.len(),
        });
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            shown: shown(text),
            bad,
        });
    }
    Ok(())
}

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's text, without copying it.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether the name starts with `.`: such link names are the daemon's own, and no
    /// configuration may declare one.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with('.')
    }
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Name, NameError> {
        check(s)?;
        Ok(Name(s.to_string()))
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;

    fn try_from(s: String) -> Result<Name, NameError> {
        check(&s)?;
        Ok(Name(s))
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;

    fn try_from(s: &str) -> Result<Name, NameError> {
        s.parse()
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.0
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        *self == other.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        Name::try_from(String::deserialize(d)?).map_err(crate::text::rejected)
    }
}

/// A name for tests, from text known to be valid.
#[cfg(test)]
pub(crate) fn name(text: &str) -> Name {
    text.parse().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn the_rule() {
        for ok in ["a", "host-1", "A.b_c-9", ".probe", &"x".repeat(MAX_NAME_LEN)] {
            assert_eq!(ok.parse::<Name>().map(String::from).as_deref(), Ok(ok));
        }
        assert_eq!("".parse::<Name>(), Err(NameError::Empty));
        for (bad, c) in [
            ("a b", ' '),
            ("a/b", '/'),
            ("é", 'é'),
            ("a\n", '\n'),
            ("a\0", '\0'),
        ] {
            assert!(
                matches!(bad.parse::<Name>(), Err(NameError::BadChar { bad, .. }) if bad == c),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "x".repeat(MAX_NAME_LEN + 1).parse::<Name>(),
            Err(NameError::TooLong { len, .. }) if len == MAX_NAME_LEN + 1
        ));
        // Every constructor applies the one rule.
        assert_eq!(Name::try_from(String::from("a b")), "a b".parse::<Name>());
        assert_eq!(Name::try_from("h0"), Ok(name("h0")));
        assert!(name(".probe").is_reserved() && !name("h0-h1").is_reserved());
    }

    #[test]
    fn errors_say_what_is_wrong_and_quote_a_bounded_escaped_prefix() {
        let e = "vm 0".parse::<Name>().unwrap_err().to_string();
        assert_eq!(
            e,
            "name \"vm 0\" contains ' '; only A-Z a-z 0-9 . _ - are allowed"
        );
        let e = "x".repeat(70).parse::<Name>().unwrap_err().to_string();
        assert_eq!(
            e,
            format!("name \"{}…\" is 70 bytes long (at most 64)", "x".repeat(64))
        );
        let long = "\u{202e}".repeat(1000);
        let e = long.parse::<Name>().unwrap_err().to_string();
        assert!(e.len() < 1000, "{}", e.len());
        assert!(!e.contains('\u{202e}'), "control characters are escaped: {e}");
        assert!(e.contains("\\u{202e}"), "{e}");
    }

    #[test]
    fn compares_and_looks_up_as_text() {
        let n = name("h0-h1");
        let text = String::from("h0-h1");
        assert!(n == "h0-h1" && n == *"h0-h1" && n == text);
        assert!("h0-h1" == n && text == n);
        assert_eq!(&*n, "h0-h1");
        assert_eq!(n.to_string(), "h0-h1");
        assert_eq!(format!("{n:?}"), "\"h0-h1\"");
        let hashed: HashMap<Name, u8> = [(n.clone(), 1)].into();
        assert_eq!(hashed.get("h0-h1"), Some(&1));
        let ordered: BTreeMap<Name, u8> = [(name("b"), 2), (name("a"), 1)].into();
        assert_eq!(ordered.get("a"), Some(&1));
        assert_eq!(ordered.keys().map(Name::as_str).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Named {
        name: Name,
    }

    #[test]
    fn bad_names_fail_to_decode_with_the_parsers_error() {
        let e = serde_json::from_str::<Named>(r#"{"name":"vm 0"}"#).unwrap_err();
        assert!(e.to_string().contains("name \"vm 0\" contains ' '"), "{e}");
        let e = toml::from_str::<Named>("name = \"\"").unwrap_err();
        assert!(e.to_string().contains("name is empty"), "{e}");
        let bytes = postcard::to_stdvec(&(String::from("vm/0"),)).unwrap();
        let e = crate::text::take_from_bytes::<Named>(&bytes).unwrap_err();
        assert!(e.to_string().contains("name \"vm/0\" contains '/'"), "{e}");
    }

    proptest! {
        #[test]
        fn encodes_exactly_as_its_text(text in "[A-Za-z0-9._-]{1,64}") {
            let named = Named { name: text.parse().unwrap() };
            let plain = (text.clone(),);
            prop_assert_eq!(serde_json::to_string(&named).unwrap(), format!("{{\"name\":{}}}", serde_json::to_string(&text).unwrap()));
            prop_assert_eq!(toml::to_string(&named).unwrap(), toml::to_string(&[("name", &text)].into_iter().collect::<BTreeMap<_, _>>()).unwrap());
            prop_assert_eq!(postcard::to_stdvec(&named).unwrap(), postcard::to_stdvec(&plain).unwrap());
            let bytes = postcard::to_stdvec(&named).unwrap();
            prop_assert_eq!(crate::text::take_from_bytes::<Named>(&bytes).unwrap(), (named, &[][..]));
        }

        #[test]
        fn parsing_never_panics_and_accepts_exactly_the_rule(text in "\\PC{0,80}") {
            let ok = !text.is_empty()
                && text.len() <= MAX_NAME_LEN
                && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            prop_assert_eq!(text.parse::<Name>().is_ok(), ok);
        }
    }
}
