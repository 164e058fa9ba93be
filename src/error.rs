//! `ApiError`: every response payshim writes itself.
//!
//! One variant per reason to refuse, each mapped to one HTTP status and one body in the
//! API's own format, `{"errors":[{"status","title","detail","source","request_id"}]}`, so
//! storefronts and the official SDK handle payshim's errors like the API's. No message
//! ever quotes a value the client sent.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::auth::AuthError;
pub use crate::payment::FieldError;

/// Why payshim did not (fully) serve a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown route")]
    NotFound,
    #[error("missing storefront credential")]
    MissingCredential,
    #[error("invalid storefront credential")]
    InvalidCredential,
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("route not allowed for client")]
    RouteNotAllowed,
    #[error("body too large")]
    BodyTooLarge { limit: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("invalid token request")]
    InvalidGrant(&'static str),
    #[error("unknown client in token request")]
    UnknownClient,
    #[error("rate limited")]
    RateLimited {
        retry_after: Duration,
        scope: &'static str,
    },
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    #[error("bad upstream answer")]
    UpstreamBadResponse,
    #[error("upstream timeout")]
    UpstreamTimeout,
    #[error("not ready: {0}")]
    NotReady(&'static str),
    #[error("request read failed")]
    ClientBody,
    /// The request with this `Idempotency-Key` is still being processed (or its outcome is
    /// not known yet): nothing was forwarded; retry later.
    #[error("idempotency key in flight")]
    IdempotencyInFlight,
    /// The `Idempotency-Key` was used before for a different request.
    #[error("idempotency key reused for another request")]
    IdempotencyMismatch,
    /// Another payment for the same order is in flight.
    #[error("payment for this order in flight")]
    OrderInFlight,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::MissingCredential => ApiError::MissingCredential,
            AuthError::InvalidCredential => ApiError::InvalidCredential,
            AuthError::RouteNotAllowed => ApiError::RouteNotAllowed,
            AuthError::OriginNotAllowed => ApiError::OriginNotAllowed,
        }
    }
}

impl From<crate::limit::LimitError> for ApiError {
    fn from(e: crate::limit::LimitError) -> ApiError {
        match e {
            crate::limit::LimitError::Exceeded { scope, retry_after } => ApiError::RateLimited {
                retry_after,
                scope: scope.as_str(),
            },
            crate::limit::LimitError::StoreUnavailable => {
                ApiError::NotReady("rate limit store unavailable")
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    errors: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    status: u16,
    title: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    request_id: &'a str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MissingCredential | ApiError::InvalidCredential | ApiError::UnknownClient => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::OriginNotAllowed | ApiError::RouteNotAllowed => StatusCode::FORBIDDEN,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::InvalidGrant(_) | ApiError::ClientBody => {
                StatusCode::BAD_REQUEST
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UpstreamUnreachable | ApiError::UpstreamBadResponse => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::IdempotencyInFlight | ApiError::OrderInFlight => StatusCode::CONFLICT,
            ApiError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// Short machine-friendly reason for logs, metrics and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MissingCredential => "missing_credential",
            ApiError::InvalidCredential => "invalid_credential",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::RouteNotAllowed => "route_not_allowed",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "invalid_request",
            ApiError::InvalidGrant(_) => "invalid_grant",
            ApiError::UnknownClient => "unknown_client",
            ApiError::RateLimited { scope, .. } => scope,
            ApiError::UpstreamUnreachable => "upstream_unreachable",
            ApiError::UpstreamBadResponse => "upstream_bad_response",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::NotReady(_) => "not_ready",
            ApiError::ClientBody => "client_body",
            ApiError::IdempotencyInFlight => "idempotency_in_flight",
            ApiError::IdempotencyMismatch => "idempotency_mismatch",
            ApiError::OrderInFlight => "order_in_flight",
        }
    }

    fn title_detail(&self) -> (&'static str, String) {
        match self {
            ApiError::NotFound => ("Not Found", "This route is not served by payshim".into()),
            ApiError::MissingCredential => (
                "Unauthorized",
                "Send a storefront credential as `Authorization: Bearer <token>`".into(),
            ),
            ApiError::InvalidCredential => (
                "Unauthorized",
                "The storefront credential is not valid or has expired".into(),
            ),
            ApiError::OriginNotAllowed => (
                "Forbidden",
                "This origin is not allowed for this storefront".into(),
            ),
            ApiError::RouteNotAllowed => {
                ("Forbidden", "This storefront may not use this route".into())
            }
            ApiError::BodyTooLarge { limit } => (
                "Payload Too Large",
                format!("The request body must be at most {limit} bytes"),
            ),
            ApiError::UnsupportedMediaType => (
                "Unsupported Media Type",
                "Send the body as `Content-Type: application/json`".into(),
            ),
            ApiError::Validation(_) => ("Bad Request", "The request is not valid".into()),
            ApiError::InvalidGrant(why) => ("Bad Request", (*why).into()),
            ApiError::UnknownClient => (
                "Unauthorized",
                "Unknown client_id or wrong client_secret".into(),
            ),
            ApiError::RateLimited { scope, .. } => (
                "Too Many Requests",
                format!("Rate limit exceeded ({scope}); retry after the Retry-After delay"),
            ),
            ApiError::UpstreamUnreachable => (
                "Bad Gateway",
                "The commerce API could not be reached".into(),
            ),
            ApiError::UpstreamBadResponse => (
                "Bad Gateway",
                "The commerce API did not answer properly".into(),
            ),
            ApiError::UpstreamTimeout => (
                "Gateway Timeout",
                "The commerce API did not answer in time".into(),
            ),
            ApiError::NotReady(what) => (
                "Service Unavailable",
                format!("payshim cannot serve this request now: {what}"),
            ),
            ApiError::ClientBody => ("Bad Request", "The request body could not be read".into()),
            ApiError::IdempotencyInFlight => (
                "Conflict",
                "A request with this Idempotency-Key is still being processed; \
                 retry after the Retry-After delay"
                    .into(),
            ),
            ApiError::IdempotencyMismatch => (
                "Unprocessable Entity",
                "This Idempotency-Key was already used for a different request; \
                 use a new key for a new request"
                    .into(),
            ),
            ApiError::OrderInFlight => (
                "Conflict",
                "A payment for this order is still being processed; \
                 retry after the Retry-After delay"
                    .into(),
            ),
        }
    }

    /// The JSON body and headers of this error, tagged with the request id.
    pub fn to_response(&self, request_id: &str) -> Response<Bytes> {
        let status = self.status();
        let body = match self {
            ApiError::Validation(fields) => Body {
                errors: fields
                    .iter()
                    .map(|f| Entry {
                        status: status.as_u16(),
                        title: f.title,
                        detail: &f.detail,
                        source: Some(&f.source),
                        request_id,
                    })
                    .collect(),
            },
            _ => {
                let (title, detail) = self.title_detail();
                let json = serde_json::to_vec(&Body {
                    errors: vec![Entry {
                        status: status.as_u16(),
                        title,
                        detail: &detail,
                        source: None,
                        request_id,
                    }],
                })
                .expect("error body serializes");
                return self.finish(status, json);
            }
        };
        let json = serde_json::to_vec(&body).expect("error body serializes");
        self.finish(status, json)
    }

    fn finish(&self, status: StatusCode, json: Vec<u8>) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::from(json));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            ApiError::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            ApiError::IdempotencyInFlight | ApiError::OrderInFlight => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &ApiError) -> serde_json::Value {
        serde_json::from_slice(e.to_response("rid").body()).unwrap()
    }

    #[test]
    fn each_variant_has_its_status_and_api_format() {
        let cases = [
            (ApiError::NotFound, 404),
            (ApiError::MissingCredential, 401),
            (ApiError::InvalidCredential, 401),
            (ApiError::OriginNotAllowed, 403),
            (ApiError::RouteNotAllowed, 403),
            (ApiError::BodyTooLarge { limit: 10 }, 413),
            (ApiError::UnsupportedMediaType, 415),
            (ApiError::InvalidGrant("x"), 400),
            (ApiError::UpstreamUnreachable, 502),
            (ApiError::UpstreamTimeout, 504),
            (ApiError::NotReady("audit"), 503),
            (ApiError::IdempotencyInFlight, 409),
            (ApiError::OrderInFlight, 409),
            (ApiError::IdempotencyMismatch, 422),
            (
                ApiError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                    scope: "per_ip",
                },
                429,
            ),
        ];
        for (err, status) in cases {
            let resp = err.to_response("rid");
            assert_eq!(resp.status().as_u16(), status, "{err:?}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            let v = body(&err);
            assert_eq!(v["errors"][0]["status"], status);
            assert_eq!(v["errors"][0]["request_id"], "rid");
            assert!(v["errors"][0]["title"].is_string());
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let e = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
            scope: "per_card",
        };
        assert_eq!(e.to_response("r").headers()["retry-after"], "2");
        for e in [ApiError::IdempotencyInFlight, ApiError::OrderInFlight] {
            assert_eq!(e.to_response("r").headers()["retry-after"], "1", "{e:?}");
        }
    }

    #[test]
    fn validation_has_one_entry_per_field() {
        let e = ApiError::Validation(vec![
            FieldError {
                source: "data.number".into(),
                title: "Invalid card number",
                detail: "d".into(),
            },
            FieldError {
                source: "data.month".into(),
                title: "Invalid month",
                detail: "d".into(),
            },
        ]);
        let v = body(&e);
        assert_eq!(v["errors"].as_array().unwrap().len(), 2);
        assert_eq!(v["errors"][1]["source"], "data.month");
        assert_eq!(v["errors"][1]["status"], 400);
    }
}
