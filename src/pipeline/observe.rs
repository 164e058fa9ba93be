//! The last phase: one log line and the metrics for a finished request. Never a body,
//! never a header, never a card number: payments log brand and last four only.
//!
//! This module's path is the log line's target, which is how the log writer tells
//! request lines (batched) from every other line (`logging::batch::REQUEST_LINE_TARGET`).

use http::{Method, Response};

use super::context::{Audited, AuditedAction, RequestCtx};
use crate::body::ProxyBody;
use crate::metrics::Metrics;

pub(crate) fn record(
    ctx: &RequestCtx<'_>,
    client: Option<&str>,
    response: &Response<ProxyBody>,
    metrics: &Metrics,
) {
    let status = response.status().as_u16();
    let total = ctx.started.elapsed();
    let route = ctx.route.name();
    // Whole microseconds: long decimal fractions would look like digit runs to the
    // scrubber (and be masked into invalid JSON).
    let upstream_us = ctx.upstream_latency.map(|d| d.as_micros() as u64);
    let audited = ctx.audit.as_ref();
    let card = audited.and_then(|a| a.card.as_ref());
    tracing::info!(
        order_id = audited.and(ctx.order_id()),
        payment_method = audited.and_then(|a| a.method),
        brand = card.map(|c| c.brand.as_str()),
        last4 = card.map(|c| c.last4.as_str()),
        outcome = audited.map(|a| a.outcome.as_str()),
        upstream_status = audited.and_then(|a| a.upstream_status),
        // Only when set: most payments have none of these.
        idempotency_key = audited.and_then(|a| a.idempotency_key.map(|_| true)),
        replay_of = audited.and_then(|a| a.replay_of.as_deref()),
        unknown_outcome = audited.and_then(|a| a.unknown_outcome.then_some(true)),
        resolution = audited.and_then(|a| a.resolution),
        request_id = ctx.id.as_str(),
        client,
        route = route.as_str(),
        method = ctx.method.as_str(),
        http = ctx.http,
        status,
        total_us = total.as_micros() as u64,
        upstream_us,
        reason = ctx.reason,
        "request"
    );
    metrics.observe_request(
        route,
        static_method(&ctx.method),
        status,
        total,
        ctx.upstream_latency,
    );
    if let Some(a) = audited {
        let kind = match a.action {
            AuditedAction::Payment => "payment",
            AuditedAction::Transaction(_) => "transaction",
        };
        metrics.observe_outcome(kind, a.outcome);
        if let Some(event) = idempotency_event(a, ctx.reason) {
            metrics.observe_idempotency(event);
        }
    }
}

/// The idempotency phase's decision for the metric, if it made one worth counting.
fn idempotency_event(audited: &Audited, reason: Option<&'static str>) -> Option<&'static str> {
    match audited.resolution {
        Some("resolved") => return Some("unknown_resolved"),
        Some("lookup_failed") => return Some("unknown_lookup_failed"),
        Some(_) => return Some("unknown_not_found"),
        None => {}
    }
    if audited.replay_of.is_some() {
        return Some("replayed");
    }
    if audited.unknown_outcome {
        return Some("unknown_outcome");
    }
    match reason? {
        "idempotency_in_flight" => Some("in_flight"),
        "idempotency_mismatch" => Some("mismatch"),
        "order_in_flight" => Some("order_in_flight"),
        _ => None,
    }
}

/// Metric label for a method: known methods by name, anything else as "other", so a
/// client cannot mint label values.
fn static_method(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}
