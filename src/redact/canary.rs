//! The start-up canary: proves that the configured log pipeline masks card data before
//! payshim accepts a single request.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

use super::cvv::{REDACTED, cvv_value};

/// The canary card number pushed through the log pipeline at start-up: a Luhn-valid Visa test
/// number that no real log holds.
pub const CANARY_PAN: &str = "4000001234567899";

/// The canary card verification value, logged next to `verification_value`.
pub const CANARY_CVV: &str = "937";

/// Target of the canary event; a log filter must let it through at `ERROR`.
pub const CANARY_TARGET: &str = "payshim::canary";

/// Why the start-up canary failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CanaryError {
    #[error("log pipeline leaked the canary card number unmasked; refusing to start")]
    PanLeaked,
    #[error("log pipeline leaked the canary card verification value unmasked; refusing to start")]
    CvvLeaked,
    #[error(
        "the canary log event did not come out of the log pipeline (is target `payshim::canary` \
         filtered out at ERROR?), so card-data masking cannot be proven; refusing to start"
    )]
    NotEmitted,
}

/// An in-memory [`MakeWriter`] for the canary (and tests): every writer it makes appends to
/// one shared buffer.
#[derive(Debug, Clone, Default)]
pub struct CaptureWriter {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl CaptureWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far (lossily decoded).
    pub fn contents(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CaptureWriter {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The start-up canary. `make_subscriber` builds the real subscriber stack (same formatter
/// configuration as production) on top of the given writer wrapped in [`ScrubbingMakeWriter`].
/// One `ERROR` event with target [`CANARY_TARGET`] carrying [`CANARY_PAN`] (as a field, plain,
/// spaced and dashed in the message) and [`CANARY_CVV`] (as a `verification_value` field and in
/// a JSON snippet in the message) is sent through it, and what comes out is checked.
///
/// Errors: [`CanaryError::PanLeaked`] if the card number's digits come out in any form,
/// [`CanaryError::CvvLeaked`] if a `verification_value` is not followed by `[REDACTED]`,
/// [`CanaryError::NotEmitted`] if the event did not come out at all (filtered out), since
/// then nothing is proven.
pub fn canary_check<F, S>(make_subscriber: F) -> Result<(), CanaryError>
where
    F: FnOnce(CaptureWriter) -> S,
    S: tracing::Subscriber + Send + Sync + 'static,
{
    let capture = CaptureWriter::new();
    let subscriber = make_subscriber(capture.clone());
    let spaced = group(CANARY_PAN, ' ');
    let dashed = group(CANARY_PAN, '-');
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(
            target: "payshim::canary",
            card_number = CANARY_PAN,
            verification_value = CANARY_CVV,
            "log canary: card {spaced} / {dashed} {{\"number\":\"{CANARY_PAN}\",\"verification_value\":\"{CANARY_CVV}\"}}"
        );
    });
    check_canary_output(&capture.contents())
}

pub(super) fn group(pan: &str, sep: char) -> String {
    let mut out = String::with_capacity(pan.len() + pan.len() / 4);
    for (k, c) in pan.chars().enumerate() {
        if k > 0 && k % 4 == 0 {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

fn check_canary_output(out: &str) -> Result<(), CanaryError> {
    if !out.contains("log canary") {
        return Err(CanaryError::NotEmitted);
    }
    let joined: String = out.chars().filter(|&c| c != ' ' && c != '-').collect();
    if joined.contains(CANARY_PAN) {
        return Err(CanaryError::PanLeaked);
    }
    // Every `verification_value` must be followed by a value the scanner recognises, and that
    // value must be the mask: a form the scanner cannot parse counts as a leak.
    let lower = out.to_ascii_lowercase();
    let mut seen = 0;
    for (at, _) in lower.match_indices("verification_value") {
        match cvv_value(out.as_bytes(), at) {
            Some((start, end)) if out.as_bytes()[start..end] == *REDACTED => seen += 1,
            _ => return Err(CanaryError::CvvLeaked),
        }
    }
    if seen == 0 {
        return Err(CanaryError::NotEmitted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_fails_without_scrubbing_wrapper() {
        let err = canary_check(|w| tracing_subscriber::fmt().json().with_writer(w).finish());
        assert_eq!(err, Err(CanaryError::PanLeaked));
        assert_eq!(
            err.unwrap_err().to_string(),
            "log pipeline leaked the canary card number unmasked; refusing to start"
        );
    }

    #[test]
    fn canary_output_checks() {
        let masked = r#"log canary [PAN ****7899] {"verification_value":"[REDACTED]"}"#;
        assert_eq!(check_canary_output(masked), Ok(()));
        let cvv_leak = r#"log canary [PAN ****7899] {"verification_value":"937"}"#;
        assert_eq!(check_canary_output(cvv_leak), Err(CanaryError::CvvLeaked));
        let escaped_leak = r#"log canary [PAN ****7899] {\"verification_value\":\"937\"}"#;
        assert_eq!(
            check_canary_output(escaped_leak),
            Err(CanaryError::CvvLeaked)
        );
        let unparsed = "log canary [PAN ****7899] verification_value -> 937";
        assert_eq!(check_canary_output(unparsed), Err(CanaryError::CvvLeaked));
        let spaced_leak = "log canary 4000 0012 3456 7899 verification_value=[REDACTED]";
        assert_eq!(
            check_canary_output(spaced_leak),
            Err(CanaryError::PanLeaked)
        );
        assert_eq!(check_canary_output(""), Err(CanaryError::NotEmitted));
    }
}
