//! The stored answer of a completed request, and its replay.
//!
//! Only what the storefront needs to see the same answer again: the status, the body and
//! the allowed headers (the content type). Never stored when the scrubber finds card data
//! in the body: API answers do not echo a PAN or a CVV, and if one ever did, keeping it
//! for a day would put the store in card-data scope.

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
    /// The answer to keep, unless its body holds something that looks like card data.
    pub(crate) fn storable(
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        outcome: Outcome,
        request_id: String,
    ) -> Option<StoredAnswer> {
        if let Cow::Owned(_) = crate::redact::scrub_bytes(&body) {
            return None;
        }
        Some(StoredAnswer {
            status,
            content_type,
            body,
            outcome,
            request_id,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str) -> Option<StoredAnswer> {
        StoredAnswer::storable(
            StatusCode::CREATED,
            Some(HeaderValue::from_static("application/json")),
            Bytes::from_static(body.as_bytes()),
            Outcome::Approved,
            "rid".into(),
        )
    }

    #[test]
    fn refuses_a_body_with_a_card_number() {
        assert!(answer(r#"{"data":{"number":"4111111111111111"}}"#).is_none());
        assert!(answer(r#"{"data":{"id":"abc","status":"complete"}}"#).is_some());
    }

    #[test]
    fn replay_has_status_type_body_and_the_header() {
        let a = answer(r#"{"data":{"id":"abc"}}"#).unwrap();
        let r = a.replay();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["idempotent-replayed"], "true");
    }
}
