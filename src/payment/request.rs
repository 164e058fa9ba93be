//! [`PaymentRequest`]: a payment body after validation, and the values it is made of.
//!
//! The steps that lead here and away from here have their own files, which add their
//! methods to these types: the strict JSON tree (`json.rs`), the field checks
//! ([`PaymentRequest::parse`] in `validate.rs`, with `field_error.rs` and `calendar.rs`) and
//! the canonical body sent upstream ([`PaymentRequest::to_upstream_body`] in
//! `upstream_body.rs`). This file imports neither, so the types sit below both. See
//! README.md, Architecture.

use std::fmt;

use super::canon::Canon;
use super::card::CardNumber;
use super::cvv::Cvv;
use crate::keyed::KeyedHash;

/// The payment operation requested from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Purchase,
    Authorize,
    PurchaseSetup,
    AuthorizeSetup,
    /// The 2020 API's capture through the payments endpoint; today a transaction action.
    Capture,
}

impl Method {
    /// Every method, in the order error messages list them.
    pub const ALL: [Method; 5] = [
        Method::Purchase,
        Method::Authorize,
        Method::PurchaseSetup,
        Method::AuthorizeSetup,
        Method::Capture,
    ];

    /// The wire name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Purchase => "purchase",
            Method::Authorize => "authorize",
            Method::PurchaseSetup => "purchase_setup",
            Method::AuthorizeSetup => "authorize_setup",
            Method::Capture => "capture",
        }
    }

    /// Exact, case-sensitive match on the wire name.
    pub fn from_wire(s: &str) -> Option<Self> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The payment instrument: raw card data, or the token form (a gateway token, a customer,
/// or nothing at all for `manual` and PayPal; its members are in `PaymentRequest::fields`).
pub enum PaymentData {
    Card(CardPayment),
    Token,
}

impl fmt::Debug for PaymentData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentData::Card(card) => f.debug_tuple("Card").field(card).finish(),
            PaymentData::Token => f.write_str("Token"),
        }
    }
}

/// A validated raw-card payment. The names are `None` for the gateway whose card form had
/// none (Authorize.Net).
pub struct CardPayment {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
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
pub struct PaymentRequest {
    /// One of the configured gateways.
    pub gateway: String,
    pub method: Method,
    /// Minor units (5499 = 54.99), for split and partial payments.
    pub amount: Option<u64>,
    pub data: PaymentData,
    /// The gateway's other members (`payment`, `options`, ...), checked, in table order.
    pub fields: Vec<(String, Canon)>,
}

/// Tokens are reusable references to stored cards and options hold personal data (e-mail
/// addresses), so only the member names are printed.
impl fmt::Debug for PaymentRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.fields.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("PaymentRequest")
            .field("gateway", &self.gateway)
            .field("method", &self.method)
            .field("amount", &self.amount)
            .field("data", &self.data)
            .field("fields", &names)
            .finish()
    }
}

impl PaymentRequest {
    /// The card, for the raw-card form.
    pub fn card(&self) -> Option<&CardPayment> {
        match &self.data {
            PaymentData::Card(card) => Some(card),
            PaymentData::Token => None,
        }
    }

    /// The member `name` of the body, if it was sent (e.g. `payment`).
    pub fn field(&self, name: &str) -> Option<&Canon> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Prints `<redacted>` in place of a value in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
