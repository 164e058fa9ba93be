//! The stored answer of a completed request, and its replay.
//!
//! Only what the storefront needs to see the same answer again: the status, the body and
//! the allowed headers (the content type). Stored only as the log scrubber would write it:
//! API answers do not echo a PAN or a CVV, and if one ever did, keeping it for a day would
//! put the store in card-data scope. Not storing it instead would free the key and let a
//! retry charge again; and the scrubber also masks a 12-digit gateway reference that
//! happens to pass the Luhn check, which is not rare.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use crate::body::{ProxyBody, full_body};
use crate::outcome::Outcome;

/// The header that marks a replayed answer.
pub(crate) const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

#[derive(Debug)]
pub(crate) struct StoredAnswer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
    /// The original request's outcome, for the replay's audit record.
    pub outcome: Outcome,
    /// The request whose answer this is.
    pub request_id: String,
}

impl StoredAnswer {
    /// The answer to keep, with anything that looks like card data masked.
    pub(crate) fn storable(
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        outcome: Outcome,
        request_id: String,
    ) -> StoredAnswer {
        // Copies of their own: the body and the header value are slices of the upstream
        // connection's read buffer, and keeping a slice keeps the whole buffer (8 KiB and
        // more) for the ttl: 9.4 KB per kept answer instead of its size, measured.
        let content_type = content_type.map(|ct| own_header_value(&ct));
        let body = match crate::redact::scrub_bytes(&body) {
            Cow::Borrowed(_) => Bytes::copy_from_slice(&body),
            Cow::Owned(masked) => {
                tracing::warn!("answer kept for replay with card-like digits masked");
                Bytes::from(masked)
            }
        };
        StoredAnswer {
            status,
            content_type,
            body,
            outcome,
            request_id,
        }
    }

    /// The stored answer again, marked `Idempotent-Replayed: true`.
    pub(crate) fn replay(&self) -> Response<ProxyBody> {
        let mut response = Response::new(full_body(self.body.clone()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(ct) = &self.content_type {
            headers.insert(header::CONTENT_TYPE, ct.clone());
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

/// `value` in an allocation of its own (the JSON content type needs none).
fn own_header_value(value: &HeaderValue) -> HeaderValue {
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    if value == JSON {
        return JSON;
    }
    HeaderValue::from_bytes(value.as_bytes()).unwrap_or(JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str) -> StoredAnswer {
        StoredAnswer::storable(
            StatusCode::CREATED,
            Some(HeaderValue::from_static("application/json")),
            Bytes::from_static(body.as_bytes()),
            Outcome::Approved,
            "rid".into(),
        )
    }

    #[test]
    fn masks_a_card_number_and_keeps_the_rest() {
        let kept = answer(r#"{"data":{"number":"4111111111111111"}}"#);
        assert!(!String::from_utf8_lossy(&kept.body).contains("4111111111111111"));
        let plain = r#"{"data":{"id":"abc","status":"complete"}}"#;
        assert_eq!(answer(plain).body, plain.as_bytes());
    }

    /// A kept answer must not keep the connection buffer its body and header came from.
    #[test]
    fn keeps_its_own_copies_not_slices_of_the_read_buffer() {
        let buffer = Bytes::from(vec![b' '; 8192]);
        let inside = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let body = buffer.slice(0..4);
        let ct = HeaderValue::from_maybe_shared(buffer.slice(4..8)).unwrap();
        assert!(inside(body.as_ptr()) && inside(ct.as_bytes().as_ptr()));
        let kept = StoredAnswer::storable(
            StatusCode::OK,
            Some(ct),
            body,
            Outcome::Approved,
            "rid".into(),
        );
        assert!(
            !inside(kept.body.as_ptr()),
            "the body is a slice of the buffer"
        );
        let ct = kept.content_type.expect("content type");
        assert!(
            !inside(ct.as_bytes().as_ptr()),
            "the header is a slice of it"
        );
        assert_eq!(ct.as_bytes(), b"    ");
    }

    #[test]
    fn replay_has_status_type_body_and_the_header() {
        let a = answer(r#"{"data":{"id":"abc"}}"#);
        let r = a.replay();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["idempotent-replayed"], "true");
    }
}
