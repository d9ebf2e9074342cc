//! The lossless lexer: every byte of the input belongs to exactly one token, so the
//! tokens' texts concatenated give the input back (whitespace and comments included).

use crate::source::Span;

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Spaces, tabs, carriage returns and newlines.
    Space,
    /// `#` up to the end of the line.
    Comment,
    /// A run of characters that are neither space, `#` nor `"`: keywords, names, MACs,
    /// numbers, addresses, bare paths.
    Word,
    /// A double-quoted string; `\"` and `\\` escape.
    Str,
    /// A string without its closing quote (up to the end of the line).
    Unterminated,
}

/// A token: its kind and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Where it is.
    pub span: Span,
}

impl Token {
    /// Whether the parser skips it.
    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, TokenKind::Space | TokenKind::Comment)
    }

    /// The token's text in `src`.
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        &src[self.span.start..self.span.end]
    }
}

/// Splits `src` into tokens covering all of it.
pub fn lex(src: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        let kind = if c.is_whitespace() {
            while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
            TokenKind::Space
        } else if c == '#' {
            while chars.next_if(|&(_, c)| c != '\n').is_some() {}
            TokenKind::Comment
        } else if c == '"' {
            chars.next();
            let mut kind = TokenKind::Unterminated;
            while let Some((_, c)) = chars.next_if(|&(_, c)| c != '\n') {
                if c == '\\' {
                    chars.next_if(|&(_, c)| c != '\n');
                } else if c == '"' {
                    kind = TokenKind::Str;
                    break;
                }
            }
            kind
        } else {
            while chars
                .next_if(|&(_, c)| !c.is_whitespace() && c != '#' && c != '"')
                .is_some()
            {}
            TokenKind::Word
        };
        let end = chars.peek().map_or(src.len(), |&(i, _)| i);
        tokens.push(Token {
            kind,
            span: Span::new(start, end),
        });
    }
    tokens
}

/// The value of a [`TokenKind::Str`] token's text (quotes removed, escapes resolved).
pub fn unquote(text: &str) -> String {
    let inner = text.strip_prefix('"').unwrap_or(text);
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// `value` as the printer writes it: bare when it lexes as one word, quoted otherwise.
pub fn quote_if_needed(value: &str) -> String {
    let bare = !value.is_empty() && value.chars().all(|c| !c.is_whitespace() && c != '#' && c != '"');
    if bare {
        value.to_string()
    } else {
        let escaped: String = value
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds() {
        let src = "BEGIN # hi\n  \"a b\\\"c\" x:y \"open";
        let kinds: Vec<(TokenKind, &str)> = lex(src).iter().map(|t| (t.kind, t.text(src))).collect();
        assert_eq!(
            kinds,
            vec![
                (TokenKind::Word, "BEGIN"),
                (TokenKind::Space, " "),
                (TokenKind::Comment, "# hi"),
                (TokenKind::Space, "\n  "),
                (TokenKind::Str, "\"a b\\\"c\""),
                (TokenKind::Space, " "),
                (TokenKind::Word, "x:y"),
                (TokenKind::Space, " "),
                (TokenKind::Unterminated, "\"open"),
            ]
        );
        assert_eq!(unquote("\"a b\\\"c\""), "a b\"c");
    }

    proptest! {
        #[test]
        fn lossless(src in "\\PC*|[ \\n#\"\\\\a-z:]*") {
            let text: String = lex(&src).iter().map(|t| t.text(&src)).collect();
            prop_assert_eq!(text, src);
        }

        #[test]
        fn quoting_round_trips(value in "\\PC*") {
            let quoted = quote_if_needed(&value);
            let tokens = lex(&quoted);
            prop_assert_eq!(tokens.len(), 1);
            let t = tokens[0];
            let back = if t.kind == TokenKind::Str { unquote(t.text(&quoted)) } else { t.text(&quoted).to_string() };
            prop_assert_eq!(back, value);
        }
    }
}
