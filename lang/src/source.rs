//! Byte spans, line/column positions and diagnostics with a caret line.

use std::fmt;

/// A byte range of the source text.
///
/// Spans say where a node came from; they never take part in tree equality, so a
/// description printed and parsed back compares equal to the original.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true
    }
}

impl Eq for Span {}

impl Span {
    /// The span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The description is wrong; tools refuse it.
    Error,
    /// Accepted, but probably not what was meant.
    Warning,
}

/// A parse error or a failed semantic check, located in the source.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where.
    pub span: Span,
    /// 1-based line of `span.start`.
    pub line: usize,
    /// 1-based column (in characters) of `span.start`.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What would have been right there, if the parser knows.
    pub expected: Option<String>,
}

impl Diagnostic {
    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The diagnostic as a compiler prints it: `file:line:col: error: message`, the source
    /// line, and a caret line under the offending text with what was expected.
    pub fn render(&self, file: &str, src: &str) -> String {
        let line_start = src[..self.span.start.min(src.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line_end = src[line_start..].find('\n').map_or(src.len(), |i| line_start + i);
        let text = &src[line_start..line_end];
        let width = src
            .get(self.span.start.min(line_end)..self.span.end.min(line_end))
            .map_or(0, |s| s.chars().count())
            .max(1);
        let gutter = self.line.to_string().len();
        let mut out = format!("{file}:{}:{}: {self}\n", self.line, self.column);
        out += &format!("{:gutter$} |\n{} | {text}\n", "", self.line);
        out += &format!(
            "{:gutter$} | {}{}",
            "",
            " ".repeat(self.column - 1),
            "^".repeat(width)
        );
        if let Some(e) = &self.expected {
            out += &format!(" expected {e}");
        }
        out.push('\n');
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.message)
    }
}

/// Turns byte offsets of one source text into lines and columns.
#[derive(Debug)]
pub struct Source<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    /// Indexes `text`.
    pub fn new(text: &'a str) -> Source<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source { text, line_starts }
    }

    /// The text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// A diagnostic at `span`.
    pub fn diagnostic(
        &self,
        severity: Severity,
        span: Span,
        message: impl Into<String>,
        expected: Option<String>,
    ) -> Diagnostic {
        let line = self.line_starts.partition_point(|&s| s <= span.start);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..span.start.min(self.text.len()))
            .map_or(1, |s| s.chars().count() + 1);
        Diagnostic {
            severity,
            span,
            line,
            column,
            message: message.into(),
            expected,
        }
    }

    /// An error at `span`.
    pub fn error(&self, span: Span, message: impl Into<String>, expected: Option<String>) -> Diagnostic {
        self.diagnostic(Severity::Error, span, message, expected)
    }
}
