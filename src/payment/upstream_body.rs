//! The canonical body sent upstream in place of the client's bytes.
//!
//! It is re-serialized from the validated values, never copied from the request, so payshim
//! and the upstream cannot disagree on what the body means: fixed field order, month as two
//! digits, year as four. It holds the PAN and CVV, so it is written into a zeroizing buffer
//! sized up front.

use serde::Serialize;
use zeroize::Zeroizing;

use super::request::{PaymentData, PaymentRequest};

impl PaymentRequest {
    /// The canonical body sent upstream: fixed field order, month as two digits, year as four.
    /// Zeroizing because it holds the PAN and CVV.
    pub fn to_upstream_body(&self) -> Zeroizing<Vec<u8>> {
        let gateway = self.gateway.as_str();
        let method = self.method.as_str();
        match &self.data {
            PaymentData::Card(card) => {
                let data = UpstreamCard {
                    gateway,
                    method,
                    first_name: &card.first_name,
                    last_name: &card.last_name,
                    number: card.number.expose(),
                    month: format!("{:02}", card.month),
                    year: format!("{:04}", card.year),
                    verification_value: card.cvv.expose(),
                };
                let len = data_len(&data);
                write_json(&Envelope { data }, len)
            }
            PaymentData::Token { payment } => {
                let data = UpstreamToken {
                    gateway,
                    method,
                    payment,
                };
                write_json(
                    &Envelope { data },
                    gateway.len() + method.len() + payment.len(),
                )
            }
        }
    }
}

#[derive(Serialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Serialize)]
struct UpstreamCard<'a> {
    gateway: &'a str,
    method: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    number: &'a str,
    month: String,
    year: String,
    verification_value: &'a str,
}

#[derive(Serialize)]
struct UpstreamToken<'a> {
    gateway: &'a str,
    method: &'a str,
    payment: &'a str,
}

/// Total length of the string values of a card body, to size its buffer.
fn data_len(d: &UpstreamCard<'_>) -> usize {
    [
        d.gateway,
        d.method,
        d.first_name,
        d.last_name,
        d.number,
        &d.month,
        &d.year,
        d.verification_value,
    ]
    .iter()
    .map(|s| s.len())
    .sum()
}

/// Serializes into a buffer reserved up front for the worst case (every value byte escaped as
/// `\u00XX`, six bytes), so the buffer never reallocates and no stale copy of the PAN is left
/// in freed memory.
fn write_json<T: Serialize>(value: &T, values_len: usize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256 + 6 * values_len));
    serde_json::to_writer(&mut *buf, value).expect("serializing string fields cannot fail");
    buf
}
