//! Log scrubber: the backstop that keeps card data out of every log line (see README.md,
//! Architecture).
//!
//! Card data should never reach a log in the first place (`CardNumber` and `Cvv` print masks,
//! bodies are never logged). This module is the second line of defence:
//!
//! * [`scrub`] masks Luhn-valid runs of 12-19 ASCII digits (also grouped with single spaces or
//!   dashes) as `[PAN ****dddd]`, and the values of CVV-like keys as `[REDACTED]`.
//! * [`ScrubbingMakeWriter`] wraps any `tracing_subscriber` writer so that every formatted event
//!   is scrubbed as a whole before it is written.
//! * [`install_panic_hook`] replaces the default panic hook (which prints the raw message) with
//!   one that scrubs.
//! * [`canary_check`] pushes a test card number through the real log pipeline at start-up;
//!   payshim refuses to start if it comes out unmasked.
//!
//! The scanner is hand-written (no regex): one forward pass over the bytes, no allocation unless
//! something is masked. It runs on every log line.
//!
//! # Rules
//!
//! A *digit run* is a maximal sequence of ASCII digits in which single spaces or single dashes
//! may stand between two digits (`4111 1111 1111 1111`, `3782-822463-10005`). A run is masked
//! when
//! * it holds 12-19 digits and passes Luhn, or one of its groups, or a sequence of consecutive
//!   groups, holds 12-19 digits and passes Luhn (`qty 2 4111111111111111` is one 17-digit run,
//!   but the card number in it is still found), or
//! * it holds more than 19 digits and any 12-19 digit window of it passes Luhn (a card number
//!   glued to other digits is still a card number).
//!
//! Inside a UUID standing alone only the first rule's whole-run check applies: its hex groups
//! join into digit runs by chance (`...-7123-8456-123456789012`), not because a card is there.
//!
//! The whole run is replaced; the mask shows the last four digits of the Luhn-valid part (PCI
//! DSS allows these), never digits around it (which could be a CVV). Runs that fail Luhn
//! (13-digit millisecond timestamps, order numbers) and shorter numbers (IP addresses, counts)
//! are left alone.
//!
//! The value of a CVV-like key (`verification_value`, `cvv`, `cvc`, `cvv2`, `cvc2`,
//! `security_code`, `card_code`; case-insensitive, `_` optional or `-`, also as the tail of a
//! longer key such as `card_cvv` or `card[cvc]`) is replaced by `[REDACTED]` when it follows
//! `:` or `=`: JSON strings (also escaped inside another JSON string, at any depth), JSON
//! numbers, `key=value`, `key="value"`, `key: value`, `key='value'`.
//!
//! Files: `scan.rs` is the scanner's loop, `pan.rs` and `cvv.rs` the two things it looks for;
//! `writer.rs` is the `tracing` writer, `stderr.rs` the direct path to stderr, `panic.rs` the
//! panic hook and `canary.rs` the start-up canary. The Luhn check itself is shared with card
//! validation (`crate::luhn`).

mod canary;
mod cvv;
mod pan;
mod panic;
mod scan;
mod stderr;
mod writer;

#[cfg(test)]
mod tests;

pub use self::canary::{
    CANARY_CVV, CANARY_PAN, CANARY_TARGET, CanaryError, CaptureWriter, canary_check,
};
pub use self::panic::install_panic_hook;
pub use self::scan::{scrub, scrub_bytes};
pub use self::stderr::write_scrubbed;
pub use self::writer::{ScrubbingMakeWriter, ScrubbingWriter};
