//! [`PaymentRequest`]: a payment body after validation, and the values it is made of.
//!
//! The steps that lead here and away from here have their own files, which add their
//! methods to these types: the strict JSON tree (`json.rs`), the field checks
//! ([`PaymentRequest::parse`] in `validate.rs`, with `field_error.rs` and `calendar.rs`) and
//! the canonical body sent upstream ([`PaymentRequest::to_upstream_body`] in
//! `upstream_body.rs`). This file imports neither, so the types sit below both. See
//! README.md, Architecture.

use std::fmt;

use super::card::CardNumber;
use super::cvv::Cvv;
use crate::keyed::KeyedHash;

/// The payment operation requested from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Purchase,
    Authorize,
    Capture,
}

impl Method {
    /// The wire name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Purchase => "purchase",
            Method::Authorize => "authorize",
            Method::Capture => "capture",
        }
    }

    /// Exact, case-sensitive match on the wire name.
    pub(super) fn from_wire(s: &str) -> Option<Self> {
        [Method::Purchase, Method::Authorize, Method::Capture]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// The payment instrument: raw card data, or a gateway token (`"<acctid>|<profileid>"`).
pub enum PaymentData {
    Card(CardPayment),
    Token { payment: String },
}

/// The token is a reusable reference to a stored card, so it is not printed either.
impl fmt::Debug for PaymentData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentData::Card(card) => f.debug_tuple("Card").field(card).finish(),
            PaymentData::Token { .. } => {
                f.debug_struct("Token").field("payment", &Redacted).finish()
            }
        }
    }
}

/// A validated raw-card payment.
pub struct CardPayment {
    pub first_name: String,
    pub last_name: String,
    pub number: CardNumber,
    pub month: u8,
    pub year: u16,
    pub cvv: Cvv,
}

impl CardPayment {
    /// HMAC-SHA-256(key, `pan|MM|YYYY|cvv`), with the month and year formatted as in the
    /// upstream body. Counting distinct values per card fingerprint reveals a client guessing
    /// expiry dates or CVVs, without storing either.
    pub(crate) fn attempt_fingerprint(&self, key: &KeyedHash) -> [u8; 32] {
        let month = format!("{:02}", self.month);
        let year = format!("{:04}", self.year);
        key.mac(&[
            self.number.expose().as_bytes(),
            b"|",
            month.as_bytes(),
            b"|",
            year.as_bytes(),
            b"|",
            self.cvv.expose().as_bytes(),
        ])
    }
}

/// Cardholder names are personal data and are not logged; the expiry is card data. Only the
/// masked number (brand, last four) is shown.
impl fmt::Debug for CardPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardPayment")
            .field("first_name", &Redacted)
            .field("last_name", &Redacted)
            .field("number", &self.number)
            .field("expiry", &Redacted)
            .field("cvv", &self.cvv)
            .finish()
    }
}

/// A validated payment request, ready to be re-serialized for the upstream.
#[derive(Debug)]
pub struct PaymentRequest {
    /// One of the configured gateways.
    pub gateway: String,
    pub method: Method,
    pub data: PaymentData,
}

impl PaymentRequest {
    /// The card, for the raw-card form.
    pub fn card(&self) -> Option<&CardPayment> {
        match &self.data {
            PaymentData::Card(card) => Some(card),
            PaymentData::Token { .. } => None,
        }
    }
}

/// Prints `<redacted>` in place of a value in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
