//! The payment route, `POST /v2/orders/{uuid}/payments`: what it adds to the pipeline.
//!
//! Before the body: the audit log must be writable, the body must be JSON and the order
//! id a UUID. After it: the strict parse, the card's summary and fingerprints (for the
//! audit record and the pre-forward limits) and the canonical body that goes upstream.
//! The raw body is wiped as soon as it is parsed, the canonical one once it is sent.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::context::{LimitKeys, RequestCtx};
use crate::audit::{AuditLog, CardSummary};
use crate::config::Config;
use crate::error::{ApiError, FieldError};
use crate::idempotency::payment_fingerprint;
use crate::keyed::KeyedHash;
use crate::payment::{PaymentRequest, YearMonth};
use crate::upstream::{self, Outgoing};

/// The payment rules, from the config.
pub(crate) struct PaymentRules {
    gateways: Vec<String>,
    /// `audit.fingerprint_key`, absorbed once: card fingerprints and the idempotency
    /// request fingerprint are keyed with it on every payment. Not the chain key, so that
    /// rotating that keeps fingerprints and per-card limits continuous.
    hasher: KeyedHash,
}

/// A buffer that held card data: wiped when the last reference goes.
struct Wiped(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PaymentRules {
    pub(crate) fn new(config: &Config) -> PaymentRules {
        PaymentRules {
            gateways: config.payments.gateways.clone(),
            hasher: KeyedHash::new(config.audit.fingerprint_key.expose_secret()),
        }
    }

    /// Checks made on the head alone, so a payment that cannot be taken is refused
    /// without reading its body.
    pub(crate) fn before_body(
        &self,
        ctx: &RequestCtx<'_>,
        audit: &AuditLog,
        head: &Parts,
    ) -> Result<(), ApiError> {
        if !audit.is_healthy() {
            return Err(ApiError::NotReady("audit log not writable"));
        }
        require_json(&head.headers)?;
        ctx.order_id().ok_or_else(invalid_order_id)?;
        Ok(())
    }

    /// Parses and validates the body strictly and prepares the canonical upstream
    /// request. The card's summary and fingerprints go into `ctx`, never the card.
    pub(crate) fn validate(
        &self,
        ctx: &mut RequestCtx<'_>,
        head: &Parts,
        body: Bytes,
    ) -> Result<Outgoing, ApiError> {
        let order = ctx
            .order_id()
            .and_then(|o| uuid::Uuid::parse_str(o).ok())
            .ok_or_else(invalid_order_id)?;
        let raw = Wiped(Zeroizing::new(Vec::from(body)));
        let request = PaymentRequest::parse(raw.as_ref(), &self.gateways, YearMonth::now_utc())
            .map_err(ApiError::Validation)?;
        drop(raw);
        let card_fingerprint = request.card().map(|c| c.number.fingerprint(&self.hasher));
        let fingerprint =
            payment_fingerprint(&self.hasher, &order, &request, card_fingerprint.as_ref());
        let audited = ctx.audited();
        audited.fingerprint = Some(fingerprint);
        audited.method = Some(request.method.as_str());
        audited.gateway = Some(request.gateway.clone());
        let mut card_keys = None;
        if let (Some(c), Some(fingerprint)) = (request.card(), card_fingerprint) {
            audited.card = Some(CardSummary {
                brand: c.number.brand().as_str().to_string(),
                bin: c.number.bin().to_string(),
                last4: c.number.last4().to_string(),
                fingerprint: crate::audit::hex32(&fingerprint),
            });
            card_keys = Some((fingerprint, c.attempt_fingerprint(&self.hasher)));
        }
        audited.limit_keys = Some(LimitKeys {
            order,
            card: card_keys,
        });
        Ok(Outgoing {
            method: Method::POST,
            path_and_query: upstream::path_only(&head.uri),
            headers: json_headers(&head.headers),
            body: Bytes::from_owner(Wiped(request.to_upstream_body())),
        })
    }
}

/// `Content-Type` must be JSON (`application/json`, optionally with parameters, or a
/// `+json` type such as `application/vnd.api+json`).
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// The order id in the path is not a UUID. The error names where, never the value.
fn invalid_order_id() -> ApiError {
    ApiError::Validation(vec![FieldError {
        source: "path.order_id".into(),
        title: "Invalid order id",
        detail: "The order id in the path must be a UUID (8-4-4-4-12 hexadecimal digits)".into(),
    }])
}

/// The storefront's forwardable headers, with the body's type fixed to JSON.
fn json_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = upstream::forwardable_headers(incoming);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (ct, ok) in [
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Application/JSON"), true),
            (Some("application/vnd.api+json"), true),
            (Some("text/plain"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (None, false),
        ] {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            assert_eq!(require_json(&h).is_ok(), ok, "{ct:?}");
        }
    }
}
