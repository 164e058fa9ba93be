//! The payment steps: `POST /v2/orders/{uuid}/payments`.
//!
//! credential -> route permission -> audit writable? -> JSON, size-limited body -> strict
//! parse -> `payment.forwarded` (durable) -> one upstream call with the canonical body ->
//! `payment.completed` -> the upstream's answer as it came. Any refusal is audited as
//! `payment.rejected` and nothing reaches the upstream.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

use super::{Context, Exchange, Proxy, forward};
use crate::audit::{AuditEvent, AuditRecord, CardSummary, Submit};
use crate::auth::ClientId;
use crate::config::Config;
use crate::error::ApiError;
use crate::payment::{PaymentRequest, YearMonth};
use crate::route::RouteName;
use crate::upstream::{self, Outgoing, ProxyBody};

/// What the request log line says about a payment: never the PAN, CVV or names.
#[derive(Debug, Default)]
pub(crate) struct PaymentLog {
    pub order_id: Option<String>,
    pub method: Option<&'static str>,
    pub brand: Option<&'static str>,
    pub last4: Option<String>,
    pub outcome: &'static str,
    /// What the API answered, when it answered (payshim's own status can differ: 502/504).
    pub upstream_status: Option<u16>,
}

pub(crate) struct Payments {
    gateways: Vec<String>,
    audit_key: SecretSlice<u8>,
}

/// A buffer that held card data: wiped when the last reference goes.
struct Wiped(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Payments {
    pub fn new(config: &Config) -> Payments {
        Payments {
            gateways: config.payments.gateways.clone(),
            audit_key: config.audit.key.clone(),
        }
    }

    pub async fn handle(
        &self,
        ctx: &Context<'_>,
        client: Result<ClientId, ApiError>,
        req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let mut log = PaymentLog {
            order_id: ctx.order_id.map(str::to_string),
            outcome: "rejected",
            ..PaymentLog::default()
        };
        let mut card = None;
        let result = self.run(ctx, client, req, ex, &mut log, &mut card).await;
        if let Err(e) = &result
            && log.outcome == "rejected"
        {
            let mut record = base_record(ctx, ex, AuditEvent::PaymentRejected, "rejected");
            record.reason = Some(e.reason().to_string());
            record.method = log.method.map(str::to_string);
            record.card = card;
            submit_audit(ctx.proxy, record);
        }
        ex.payment = Some(log);
        result
    }

    async fn run(
        &self,
        ctx: &Context<'_>,
        client: Result<ClientId, ApiError>,
        req: Request<Incoming>,
        ex: &mut Exchange,
        log: &mut PaymentLog,
        card: &mut Option<CardSummary>,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let client = client?;
        ctx.proxy
            .clients()
            .check_route(client, RouteName::Payments)?;
        if !ctx.proxy.audit().is_healthy() {
            return Err(ApiError::NotReady("audit log not writable"));
        }
        require_json(req.headers())?;
        let order = ctx
            .order_id
            .and_then(|o| uuid::Uuid::parse_str(o).ok())
            .ok_or_else(invalid_order_id)?;
        let (parts, body) = req.into_parts();
        let raw = Wiped(Zeroizing::new(Vec::from(
            ctx.proxy.read_body(&parts.headers, body).await?,
        )));
        let request = PaymentRequest::parse(raw.as_ref(), &self.gateways, YearMonth::now_utc())
            .map_err(ApiError::Validation)?;
        drop(raw);
        log.method = Some(request.method.as_str());
        let mut fingerprints = None;
        if let Some(c) = request.card() {
            let key = self.audit_key.expose_secret();
            let fingerprint = c.number.fingerprint(key);
            log.brand = Some(c.number.brand().as_str());
            log.last4 = Some(c.number.last4().to_string());
            *card = Some(CardSummary {
                brand: c.number.brand().as_str().to_string(),
                bin: c.number.bin().to_string(),
                last4: c.number.last4().to_string(),
                fingerprint: crate::audit::hex32(&fingerprint),
            });
            fingerprints = Some((fingerprint, c.attempt_fingerprint(key)));
        }
        let card_keys = fingerprints.as_ref().map(|(card, attempt)| (card, attempt));
        ctx.proxy
            .limiter()
            .check_payment(Some(order), card_keys)
            .await?;
        let mut record = base_record(ctx, ex, AuditEvent::PaymentForwarded, "forwarded");
        record.gateway = Some(request.gateway.clone());
        record.method = Some(request.method.as_str().to_string());
        record.card = card.clone();
        let out = Outgoing {
            method: Method::POST,
            path_and_query: upstream::path_only(&parts.uri),
            headers: json_headers(&parts.headers),
            body: Bytes::from_owner(Wiped(request.to_upstream_body())),
        };
        drop(request);
        let done = forward::detached(ctx.proxy, out, record, ex.client).await;
        ex.upstream_latency = done.latency;
        log.outcome = done.outcome;
        log.upstream_status = done.response.as_ref().ok().map(|r| r.status().as_u16());
        done.response
    }
}

/// `Content-Type` must be JSON (`application/json`, optionally with parameters, or a
/// `+json` type such as `application/vnd.api+json`).
pub(crate) fn require_json(headers: &http::HeaderMap) -> Result<(), ApiError> {
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
    ApiError::Validation(vec![crate::payment::FieldError {
        source: "path.order_id".into(),
        title: "Invalid order id",
        detail: "The order id in the path must be a UUID (8-4-4-4-12 hexadecimal digits)".into(),
    }])
}

/// The storefront's forwardable headers, with the body's type fixed to JSON.
fn json_headers(incoming: &http::HeaderMap) -> http::HeaderMap {
    let mut headers = upstream::forwardable_headers(incoming);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

pub(crate) fn base_record(
    ctx: &Context<'_>,
    ex: &Exchange,
    event: AuditEvent,
    outcome: &str,
) -> AuditRecord {
    let client = ex
        .client
        .map(|c| ctx.proxy.clients().get(c).id.clone())
        .unwrap_or_else(|| "unauthenticated".to_string());
    let mut record = AuditRecord::new(
        event,
        ctx.request_id,
        client,
        ctx.conn.remote.ip().to_string(),
        outcome,
    );
    record.order_id = ctx.order_id.map(str::to_string);
    record
}

/// Writes a record the response does not wait for (rejections, completions). Queued
/// directly when there is room; only a full queue costs a task that waits for room. A
/// record that cannot be written is logged by the writer, which also marks the log
/// unhealthy, and that stops further payments.
pub(crate) fn submit_audit(proxy: &Proxy, record: AuditRecord) {
    match proxy.audit().submit(record) {
        Ok(()) => {}
        Err(Submit::Full(record)) => {
            let audit = proxy.audit().clone();
            let running = proxy.detached_work();
            tokio::spawn(async move {
                let _running = running;
                if let Err(e) = audit.append(*record).await {
                    tracing::error!(error = %e, "audit record lost");
                }
            });
        }
        Err(Submit::Closed) => tracing::error!("audit record lost: the audit log is closed"),
    }
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
            let mut h = http::HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            assert_eq!(require_json(&h).is_ok(), ok, "{ct:?}");
        }
    }
}
