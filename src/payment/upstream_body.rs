//! The canonical body sent upstream in place of the client's bytes.
//!
//! It is re-serialized from the validated values, never copied from the request, so payshim
//! and the upstream cannot disagree on what the body means: fixed member order (`gateway`,
//! `method`, `amount`, the card fields, then the gateway's members in table order), month as
//! two digits, year as four. A card body holds the PAN and CVV, so it is written into a
//! zeroizing buffer sized up front.

use serde::ser::{Serialize, SerializeMap, Serializer};
use zeroize::Zeroizing;

use super::request::{CardPayment, PaymentData, PaymentRequest};

impl PaymentRequest {
    /// The canonical body sent upstream. Zeroizing because a card body holds the PAN and CVV.
    pub fn to_upstream_body(&self) -> Zeroizing<Vec<u8>> {
        let card_len = self.card().map_or(0, card_len);
        write_json(
            &Envelope {
                data: Data {
                    request: self,
                    card: true,
                },
            },
            self.fields_len() + card_len,
        )
    }

    /// Every member except the card's: the canonical bytes the request fingerprint hashes
    /// (with the card's keyed fingerprint) so that two payments differing in amount, token
    /// or options are never taken for the same.
    pub(crate) fn canonical_fields(&self) -> Zeroizing<Vec<u8>> {
        write_json(
            &Data {
                request: self,
                card: false,
            },
            self.fields_len(),
        )
    }

    fn fields_len(&self) -> usize {
        let members: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.text_len())
            .sum();
        self.gateway.len() + self.method.as_str().len() + 20 + members
    }
}

#[derive(serde::Serialize)]
struct Envelope<'a> {
    data: Data<'a>,
}

/// The `data` object; with `card` false, without the card's members.
struct Data<'a> {
    request: &'a PaymentRequest,
    card: bool,
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.request;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("gateway", &r.gateway)?;
        map.serialize_entry("method", r.method.as_str())?;
        if let Some(amount) = r.amount {
            map.serialize_entry("amount", &amount)?;
        }
        if let (PaymentData::Card(card), true) = (&r.data, self.card) {
            if let Some(first) = &card.first_name {
                map.serialize_entry("first_name", first)?;
            }
            if let Some(last) = &card.last_name {
                map.serialize_entry("last_name", last)?;
            }
            map.serialize_entry("number", card.number.expose())?;
            map.serialize_entry("month", &format!("{:02}", card.month))?;
            map.serialize_entry("year", &format!("{:04}", card.year))?;
            map.serialize_entry("verification_value", card.cvv.expose())?;
        }
        for (name, value) in &r.fields {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Bytes of the card's members and their names.
fn card_len(c: &CardPayment) -> usize {
    let names =
        c.first_name.as_ref().map_or(0, String::len) + c.last_name.as_ref().map_or(0, String::len);
    names + c.number.expose().len() + c.cvv.expose().len() + 80
}

/// Serializes into a buffer reserved up front for the worst case (every value byte escaped as
/// `\u00XX`, six bytes), so the buffer never reallocates and no stale copy of the PAN is left
/// in freed memory.
fn write_json<T: Serialize>(value: &T, values_len: usize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256 + 6 * values_len));
    serde_json::to_writer(&mut *buf, value).expect("serializing string fields cannot fail");
    buf
}
