//! Fields that travel as text and deserialize through a parser (names, rule
//! sides and outputs), and decoding postcard messages without losing the parser's error.
//!
//! postcard's error is a plain enum: the message of a custom error (`"name \"vm 0\"
//! contains ' '"`) is dropped and only "Serde Deserialization Error" is left. So the
//! parsers' `Deserialize` impls build their error with `rejected`, which also leaves the
//! message in a per-thread slot while a [`take_from_bytes`] on that thread runs, and
//! `take_from_bytes` reports it. JSON and TOML keep the message themselves.

use std::cell::RefCell;
use std::fmt::Display;

use serde::Deserialize;

thread_local! {
    /// `Some` while a [`take_from_bytes`] runs on this thread: the first text field's
    /// error, once one fails.
    static REJECTED: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// A serde error for a text field whose parser refused it with `error`.
pub(crate) fn rejected<E: serde::de::Error>(error: impl Display) -> E {
    let message = error.to_string();
    REJECTED.with(|slot| {
        if let Some(first @ None) = &mut *slot.borrow_mut() {
            *first = Some(message.clone());
        }
    });
    E::custom(message)
}

/// Why bytes are not a postcard message of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostcardError {
    /// A text field did not parse; the parser's message (e.g. a [`crate::name::NameError`]).
    #[error("{0}")]
    Text(String),
    /// The bytes do not have the message's shape (too short, a bad tag, bad UTF-8, ...).
    #[error("{0}")]
    Shape(postcard::Error),
}

/// [`postcard::take_from_bytes`], with the message of a text field that did not parse.
pub fn take_from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, &'a [u8]), PostcardError> {
    // Restoring what was there keeps a decode nested in another's (a custom Deserialize
    // that decodes postcard itself) from clearing the outer one's slot.
    let outer = REJECTED.with(|slot| slot.replace(Some(None)));
    let result = postcard::take_from_bytes(bytes);
    let text = REJECTED.with(|slot| slot.replace(outer)).flatten();
    result.map_err(|e| match (e, text) {
        (postcard::Error::SerdeDeCustom, Some(text)) => PostcardError::Text(text),
        (e, _) => PostcardError::Shape(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Output;

    #[test]
    fn postcard_errors_keep_the_text_fields_message() {
        let bytes = postcard::to_stdvec("link:h0 h1").unwrap();
        let e = take_from_bytes::<Output>(&bytes).unwrap_err();
        assert!(
            matches!(&e, PostcardError::Text(m) if m.contains("\"h0 h1\" contains ' '")),
            "{e}"
        );
        // A decode that fails for its shape says so, even after a text field failed
        // elsewhere outside any decode.
        let _ = serde_json::from_str::<Output>("\"link:h0 h1\"");
        assert_eq!(
            take_from_bytes::<Output>(&[5, b'l']),
            Err(PostcardError::Shape(postcard::Error::DeserializeUnexpectedEnd))
        );
        let good = postcard::to_stdvec("iface:vm0").unwrap();
        assert_eq!(
            take_from_bytes::<Output>(&good).map(|(o, _)| o.to_string()),
            Ok("iface:vm0".to_string())
        );
    }
}
