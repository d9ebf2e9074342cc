//! Forwarding rules as users write them: `(src qualifier, src MAC | any)
//! (dst qualifier, dst MAC | any | none) -> outputs` (thesis fig. 2).
//!
//! # Priority
//!
//! Each side of a rule scores its specificity on the same scale:
//!
//! | side match        | score |
//! |-------------------|-------|
//! | exact `MAC`       | 2     |
//! | `not MAC`         | 1     |
//! | `any`             | 0     |
//! | `none` (dst only) | -1    |
//!
//! and `priority = 3 × dst_score + src_score`, so destination specificity always outweighs
//! source specificity and the scheme treats both sides alike:
//!
//! | dst \ src | exact | not | any |
//! |-----------|-------|-----|-----|
//! | exact     | 8     | 7   | 6   |
//! | not       | 5     | 4   | 3   |
//! | any       | 2     | 1   | 0   |
//! | none      | -1    | -2  | -3  |
//!
//! A rule whose destination is `none` is a default rule: it matches every destination, at
//! a priority below every other rule. **All** matching rules at the highest matching
//! priority fire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::mac::{MacAddr, MacParseError};
use crate::name::{Name, NameError};

/// How one side of a rule matches an address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MacMatch {
    /// Matches every address.
    Any,
    /// Matches exactly this address.
    Exact(MacAddr),
    /// Matches every address but this one.
    Not(MacAddr),
}

/// How the destination side of a rule matches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DstMatch {
    /// A destination match of the same kinds as a source match.
    Mac(MacMatch),
    /// The default rule: matches every destination at the lowest priority.
    None,
}

impl MacMatch {
    /// Whether `mac` satisfies this side.
    #[inline]
    pub fn matches(&self, mac: MacAddr) -> bool {
        match self {
            MacMatch::Any => true,
            MacMatch::Exact(m) => *m == mac,
            MacMatch::Not(m) => *m != mac,
        }
    }

    /// Specificity score (see the module docs).
    pub fn score(&self) -> i8 {
        match self {
            MacMatch::Exact(_) => 2,
            MacMatch::Not(_) => 1,
            MacMatch::Any => 0,
        }
    }
}

impl DstMatch {
    /// Whether `mac` satisfies this side; `none` matches everything.
    #[inline]
    pub fn matches(&self, mac: MacAddr) -> bool {
        match self {
            DstMatch::Mac(m) => m.matches(mac),
            DstMatch::None => true,
        }
    }

    /// Specificity score (see the module docs).
    pub fn score(&self) -> i8 {
        match self {
            DstMatch::Mac(m) => m.score(),
            DstMatch::None => -1,
        }
    }
}

/// The priority of a rule with these sides (see the module docs).
pub fn priority(src: &MacMatch, dst: &DstMatch) -> i8 {
    3 * dst.score() + src.score()
}

/// Where a rule sends a frame: a link to another daemon or a local interface, by name.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Output {
    /// An overlay link, by link name.
    Link(Name),
    /// A local interface (TAP or captured device), by interface name.
    Iface(Name),
}

/// A forwarding rule as configured (outputs by name).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct RuleSpec {
    /// Source side.
    pub src: MacMatch,
    /// Destination side.
    pub dst: DstMatch,
    /// Outputs, in order; duplicates are ignored when forwarding.
    pub out: Vec<Output>,
}

/// Why rule text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleParseError {
    /// A MAC address inside the selector is malformed.
    #[error(transparent)]
    Mac(#[from] MacParseError),
    /// `none` was used as a source.
    #[error("`none` is only valid as a destination (it makes the default rule)")]
    NoneAsSource,
    /// An output is not `link:NAME` or `iface:NAME`.
    #[error("`{0}` is not an output: write link:NAME or iface:NAME")]
    Output(String),
    /// The name in an output is not a valid name.
    #[error("output: {0}")]
    Name(#[from] NameError),
}

impl fmt::Display for MacMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MacMatch::Any => f.write_str("any"),
            MacMatch::Exact(m) => write!(f, "{m}"),
            MacMatch::Not(m) => write!(f, "not {m}"),
        }
    }
}

impl FromStr for MacMatch {
    type Err = RuleParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("any") {
            return Ok(MacMatch::Any);
        }
        if s.eq_ignore_ascii_case("none") {
            return Err(RuleParseError::NoneAsSource);
        }
        let lower = s.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("not ").or_else(|| lower.strip_prefix('!')) {
            return Ok(MacMatch::Not(rest.trim().parse()?));
        }
        Ok(MacMatch::Exact(s.parse()?))
    }
}

impl fmt::Display for DstMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DstMatch::Mac(m) => m.fmt(f),
            DstMatch::None => f.write_str("none"),
        }
    }
}

impl FromStr for DstMatch {
    type Err = RuleParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("none") {
            Ok(DstMatch::None)
        } else {
            Ok(DstMatch::Mac(s.parse()?))
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Link(n) => write!(f, "link:{n}"),
            Output::Iface(n) => write!(f, "iface:{n}"),
        }
    }
}

impl FromStr for Output {
    type Err = RuleParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RuleParseError::Output(s.to_string());
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        let output: fn(Name) -> Output = match kind {
            "link" => Output::Link,
            "iface" => Output::Iface,
            _ => return Err(bad()),
        };
        Ok(output(name.parse()?))
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src {} dst {} ->", self.src, self.dst)?;
        for o in &self.out {
            write!(f, " {o}")?;
        }
        Ok(())
    }
}

// Selectors and outputs travel as their text form (`not 02:..`, `link:NAME`) in every
// format, so config files, JSON listings and control messages read the same.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(crate::text::rejected)
            }
        }
    )*};
}

serde_as_text!(MacMatch, DstMatch, Output);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::name;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn priority_table_is_the_documented_one() {
        let a = mac("02:00:00:00:00:01");
        let src = [MacMatch::Exact(a), MacMatch::Not(a), MacMatch::Any];
        let dst = [
            DstMatch::Mac(MacMatch::Exact(a)),
            DstMatch::Mac(MacMatch::Not(a)),
            DstMatch::Mac(MacMatch::Any),
            DstMatch::None,
        ];
        let expected = [[8, 7, 6], [5, 4, 3], [2, 1, 0], [-1, -2, -3]];
        for (d, row) in dst.iter().zip(expected) {
            for (s, want) in src.iter().zip(row) {
                assert_eq!(priority(s, d), want, "src {s} dst {d}");
            }
        }
    }

    #[test]
    fn not_matches_all_but_one() {
        let a = mac("02:00:00:00:00:01");
        let b = mac("02:00:00:00:00:02");
        assert!(!MacMatch::Not(a).matches(a));
        assert!(MacMatch::Not(a).matches(b));
        assert!(MacMatch::Not(a).matches(MacAddr::BROADCAST));
    }

    #[test]
    fn selectors_round_trip_through_text() {
        for text in ["any", "02:00:00:00:00:01", "not 02:00:00:00:00:01"] {
            let m: MacMatch = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
        }
        assert_eq!("none".parse::<DstMatch>().unwrap(), DstMatch::None);
        assert_eq!(
            "NOT 02:00:00:00:00:01".parse::<MacMatch>().unwrap().to_string(),
            "not 02:00:00:00:00:01"
        );
        assert_eq!("none".parse::<MacMatch>(), Err(RuleParseError::NoneAsSource));
        assert_eq!(
            "link:".parse::<Output>(),
            Err(RuleParseError::Name(NameError::Empty))
        );
        assert!(matches!(
            "iface:vm 0".parse::<Output>(),
            Err(RuleParseError::Name(NameError::BadChar { bad: ' ', .. }))
        ));
        assert!("port:x".parse::<Output>().is_err());
        assert_eq!(
            "link:h0-h1".parse::<Output>().unwrap(),
            Output::Link(name("h0-h1"))
        );
    }

    #[test]
    fn rules_serialize_as_text_in_json_and_round_trip_in_postcard() {
        let spec = RuleSpec {
            src: MacMatch::Any,
            dst: DstMatch::None,
            out: vec![Output::Link(name("h0-h1")), Output::Iface(name("vm0"))],
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            json,
            r#"{"src":"any","dst":"none","out":["link:h0-h1","iface:vm0"]}"#
        );
        assert_eq!(serde_json::from_str::<RuleSpec>(&json).unwrap(), spec);
        let bytes = postcard::to_allocvec(&spec).unwrap();
        assert_eq!(postcard::from_bytes::<RuleSpec>(&bytes).unwrap(), spec);
    }
}
