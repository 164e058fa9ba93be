//! [`FieldError`], one entry of the API `errors` array, and the errors every field shares
//! (missing, repeated, wrong type, unknown, malformed body).
//!
//! Every constructor here builds its text from the rule that was broken, never from the
//! submitted value: a rejected body may hold a PAN or a CVV in any place.

use std::fmt;

/// One validation failure; becomes one entry of the API `errors` array.
///
/// `detail` states the rule that was broken and never contains the submitted value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is: `body`, `data` or `data.<field>`.
    pub source: String,
    pub title: &'static str,
    pub detail: String,
}

impl FieldError {
    pub(super) fn new(
        source: impl Into<String>,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            source: source.into(),
            title,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.source, self.title, self.detail)
    }
}

/// The single error for a body that is not JSON. serde_json's message is not used: for some
/// inputs it quotes them. Line and column are positions, not content.
pub(super) fn malformed(e: &serde_json::Error) -> FieldError {
    FieldError::new(
        "body",
        "Malformed JSON",
        format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
}

pub(super) fn source(field: &str) -> String {
    format!("data.{field}")
}

pub(super) fn missing(source: String) -> FieldError {
    FieldError::new(source, "Missing field", "is required")
}

pub(super) fn duplicate(source: String) -> FieldError {
    FieldError::new(source, "Duplicate field", "must appear only once")
}

pub(super) fn invalid_type(source: String, detail: &'static str) -> FieldError {
    FieldError::new(source, "Invalid type", detail)
}

/// An unknown member of the top-level object (`parent` `None`) or of `data`. The name is only
/// echoed when it looks like a field name; otherwise the error points at the enclosing object.
pub(super) fn unknown(parent: Option<&str>, name: &str) -> FieldError {
    let source = match (parent, echoable_name(name)) {
        (Some(parent), true) => format!("{parent}.{name}"),
        (None, true) => name.to_owned(),
        (Some(parent), false) => parent.to_owned(),
        (None, false) => "body".to_owned(),
    };
    FieldError::new(source, "Unknown field", "is not accepted here")
}

/// Whether a client-chosen key is safe to repeat in an error: at most 64 of `[A-Za-z0-9_]`,
/// starting with a letter or `_`, and no run of three or more digits, so that a PAN, CVV or
/// year sent as a key is never echoed.
pub(super) fn echoable_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let starts_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
    let chars_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let no_digit_runs = !bytes.windows(3).any(|w| w.iter().all(u8::is_ascii_digit));
    bytes.len() <= 64 && starts_ok && chars_ok && no_digit_runs
}
