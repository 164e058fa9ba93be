//! The fingerprint of a request: what makes two requests "the same" for a key or for the
//! duplicate window.
//!
//! HMAC-SHA-256 with the card-fingerprint key over the route kind, the order (and, for a
//! transaction action, the transaction and the action) and the canonical request fields.
//! The card enters only as its keyed fingerprint plus expiry, never the PAN or the CVV, so
//! the upstream body (which holds both) is never hashed; the other members (amount, token,
//! options) enter as their canonical bytes, which hold no card data. Every variable-length field is
//! length-prefixed, so no two different requests feed the same bytes.

use smallvec::SmallVec;

use super::Digest;
use crate::keyed::KeyedHash;
use crate::payment::{PaymentData, PaymentRequest};
use crate::route::TransactionAction;

/// The fingerprint of a validated payment; `card` is the card's keyed fingerprint.
pub(crate) fn payment_fingerprint(
    hasher: &KeyedHash,
    order: &uuid::Uuid,
    request: &PaymentRequest,
    card: Option<&Digest>,
) -> Digest {
    let mut mac = Parts::new(b"payment");
    mac.field(order.as_bytes());
    mac.field(request.gateway.as_bytes());
    mac.field(request.method.as_str().as_bytes());
    // Amount, token and options; for the token form this stands in for the card.
    mac.field(&request.canonical_fields());
    match (&request.data, card) {
        (PaymentData::Card(c), Some(fingerprint)) => {
            mac.field(b"card");
            mac.field(fingerprint);
            mac.field(&[c.month]);
            mac.field(&c.year.to_le_bytes());
            mac.field(c.first_name.as_deref().unwrap_or_default().as_bytes());
            mac.field(c.last_name.as_deref().unwrap_or_default().as_bytes());
        }
        (PaymentData::Token, _) => mac.field(b"token"),
        // A card without its fingerprint cannot be told apart from another card: give it
        // a fingerprint nothing else has.
        (PaymentData::Card(_), None) => mac.field(uuid::Uuid::now_v7().as_bytes()),
    }
    mac.finish(hasher)
}

/// The fingerprint of a transaction action and its body (which holds no card data).
pub(crate) fn transaction_fingerprint(
    hasher: &KeyedHash,
    order: &str,
    transaction: &str,
    action: TransactionAction,
    body: &[u8],
) -> Digest {
    let mut mac = Parts::new(b"transaction");
    mac.field(order.as_bytes());
    mac.field(transaction.as_bytes());
    mac.field(action.as_str().as_bytes());
    mac.field(body);
    mac.finish(hasher)
}

/// The length-prefixed fields of one fingerprint, gathered on the stack (requests are
/// small; a larger one spills to the heap) and fed to one MAC.
struct Parts(SmallVec<[u8; 256]>);

impl Parts {
    fn new(kind: &[u8]) -> Parts {
        let mut parts = Parts(SmallVec::new());
        parts.field(kind);
        parts
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn finish(self, hasher: &KeyedHash) -> Digest {
        hasher.mac(&[b"request-fingerprint\0", &self.0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::{GatewayPolicy, YearMonth};

    const ORDER: uuid::Uuid = uuid::Uuid::from_u128(0x7d3c1a52_9e4f_4b8a_8c6d_2e5f4a3b1c0d);

    fn payment(number: &str, cvv: &str, year: &str) -> PaymentRequest {
        let body = format!(
            r#"{{"data":{{"gateway":"card_connect","method":"purchase","first_name":"Ada",
            "last_name":"Lovelace","number":"{number}","month":"12","year":"{year}",
            "verification_value":"{cvv}"}}}}"#
        );
        let gateways = ["card_connect".to_string()];
        let policy = GatewayPolicy::new(&gateways, &gateways).unwrap();
        PaymentRequest::parse(body.as_bytes(), &policy, YearMonth::now_utc()).unwrap()
    }

    fn fp(hasher: &KeyedHash, request: &PaymentRequest) -> Digest {
        let card = request
            .card()
            .unwrap()
            .number
            .fingerprint(&KeyedHash::new(b"k"));
        payment_fingerprint(hasher, &ORDER, request, Some(&card))
    }

    #[test]
    fn same_request_same_fingerprint_other_card_or_expiry_differs() {
        let h = KeyedHash::new(b"k");
        let base = fp(&h, &payment("4111111111111111", "123", "2031"));
        assert_eq!(base, fp(&h, &payment("4111111111111111", "123", "2031")));
        assert_ne!(base, fp(&h, &payment("5555555555554444", "123", "2031")));
        assert_ne!(base, fp(&h, &payment("4111111111111111", "123", "2032")));
        assert_ne!(
            base,
            fp(
                &KeyedHash::new(b"other"),
                &payment("4111111111111111", "123", "2031")
            )
        );
    }

    fn token(data: &str) -> Digest {
        let names: Vec<String> = ["stripe", "card_connect"].map(String::from).to_vec();
        let policy = GatewayPolicy::new(&names, &[]).unwrap();
        let body = format!(r#"{{"data":{{{data}}}}}"#);
        let request = PaymentRequest::parse(body.as_bytes(), &policy, YearMonth::now_utc())
            .unwrap_or_else(|e| panic!("{data}: {e:?}"));
        payment_fingerprint(&KeyedHash::new(b"k"), &ORDER, &request, None)
    }

    #[test]
    fn token_payments_differ_by_token_amount_and_options_not_by_member_order() {
        let base = token(r#""gateway":"stripe","method":"purchase","payment":"tok_1","amount":5"#);
        assert_eq!(
            base,
            token(r#""amount":5,"payment":"tok_1","method":"purchase","gateway":"stripe""#)
        );
        for other in [
            r#""gateway":"stripe","method":"purchase","payment":"tok_2","amount":5"#,
            r#""gateway":"stripe","method":"purchase","payment":"tok_1","amount":6"#,
            r#""gateway":"stripe","method":"purchase","payment":"tok_1""#,
            r#""gateway":"stripe","method":"authorize","payment":"tok_1","amount":5"#,
            r#""gateway":"stripe","method":"purchase","payment":"tok_1","amount":5,"options":{"customer":"c"}"#,
        ] {
            assert_ne!(base, token(other), "{other}");
        }
    }

    #[test]
    fn transaction_fields_are_separate() {
        let h = KeyedHash::new(b"k");
        let a = transaction_fingerprint(&h, "o", "t1", TransactionAction::Capture, b"");
        assert_ne!(
            a,
            transaction_fingerprint(&h, "o", "t1", TransactionAction::Refund, b"")
        );
        assert_ne!(
            a,
            transaction_fingerprint(&h, "ot", "1", TransactionAction::Capture, b"")
        );
        assert_ne!(
            a,
            transaction_fingerprint(&h, "o", "t1", TransactionAction::Capture, b"{}")
        );
    }
}
