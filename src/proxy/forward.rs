//! The audited forward shared by payments and transactions: once the `forwarded` record
//! is durable, one upstream call, then the `completed` record.
//!
//! That part runs in a task of its own. hyper drops a request's future when the storefront
//! disconnects; a payment that may already have reached the API must still run to its end
//! and be audited, or a disconnect would leave a charge nobody recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Response;
use serde::Deserialize;

use super::payments::submit_audit;
use super::{Exchange, Proxy};
use crate::audit::{AuditEvent, AuditRecord};
use crate::auth::ClientId;
use crate::error::ApiError;
use crate::upstream::{self, Outgoing, ProxyBody};

/// API answers to these routes are small JSON documents; anything bigger is not one.
const MAX_ANSWER: usize = 1 << 20;
/// How long the answer body may take once its head arrived.
const ANSWER_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts detached calls and audit writes still running, so shutdown can wait for their
/// records before the audit log closes.
#[derive(Default)]
pub(crate) struct Detached {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One running detached call (or audit write).
pub(crate) struct Running(Arc<Detached>);

impl Detached {
    pub(crate) fn enter(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(self.clone())
    }

    /// Resolves once no detached call is running.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What the detached part produced.
pub(crate) struct Completed {
    pub response: Result<Response<ProxyBody>, ApiError>,
    /// `approved`, `declined`, `upstream_error`, `timeout`, or `rejected` when the
    /// `forwarded` record could not be written (nothing was sent).
    pub outcome: &'static str,
    pub latency: Option<Duration>,
}

/// Writes `forwarded` durably, sends `out` upstream once and audits the result as its
/// `completed` counterpart, all independent of the storefront connection: a disconnect
/// at any point after this starts cannot leave a durable `forwarded` record behind
/// without the call it announces.
pub(crate) async fn detached(
    proxy: &Arc<Proxy>,
    out: Outgoing,
    forwarded: AuditRecord,
    client: Option<ClientId>,
) -> Completed {
    let proxy = proxy.clone();
    let task = tokio::spawn(async move {
        let _running = proxy.detached.enter();
        if let Err(e) = proxy.audit().append(forwarded.clone()).await {
            tracing::error!(error = %e, "audit log unavailable: request refused");
            return Completed {
                response: Err(ApiError::NotReady("audit log not writable")),
                outcome: "rejected",
                latency: None,
            };
        }
        let mut ex = Exchange {
            client,
            ..Exchange::default()
        };
        let sent = proxy.send_upstream(out, &mut ex).await;
        complete(&proxy, &ex, forwarded, sent).await
    });
    task.await.unwrap_or_else(|_| Completed {
        response: Err(ApiError::UpstreamBadResponse),
        outcome: "upstream_error",
        latency: None,
    })
}

/// Buffers the (small) answer to read its transaction id and status, audits the
/// completion, feeds the decline breaker for payments, and returns the answer unchanged.
async fn complete(
    proxy: &Proxy,
    ex: &Exchange,
    mut record: AuditRecord,
    sent: Result<Response<ProxyBody>, ApiError>,
) -> Completed {
    let payment = record.event == AuditEvent::PaymentForwarded;
    record.event = if payment {
        AuditEvent::PaymentCompleted
    } else {
        AuditEvent::TransactionCompleted
    };
    let latency = ex.upstream_latency;
    record.latency_ms = latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
    let finish = |mut record: AuditRecord, outcome: &'static str, response| {
        record.outcome = outcome.to_string();
        submit_audit(proxy, record);
        Completed {
            response,
            outcome,
            latency,
        }
    };
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            record.reason = Some(e.reason().to_string());
            let outcome = match e {
                ApiError::UpstreamTimeout => "timeout",
                _ => "upstream_error",
            };
            return finish(record, outcome, Err(e));
        }
    };
    let (parts, body) = response.into_parts();
    record.upstream_status = Some(parts.status.as_u16());
    let read = tokio::time::timeout(ANSWER_BODY_TIMEOUT, upstream::read_answer(body, MAX_ANSWER));
    let Ok(Ok(bytes)) = read.await else {
        record.reason = Some("upstream answer unreadable".into());
        return finish(record, "upstream_error", Err(ApiError::UpstreamBadResponse));
    };
    let (transaction_id, txn_status) = transaction_of(&bytes);
    let result = outcome(parts.status.as_u16(), txn_status.as_deref());
    if payment && let Some(client) = ex.client {
        let id = &proxy.clients().get(client).id;
        proxy.limiter().record_outcome(id, result == "declined");
    }
    // A transaction action keeps the id it was addressed to.
    if record.transaction_id.is_none() {
        record.transaction_id = transaction_id;
    }
    let response = Response::from_parts(parts, upstream::full_body(bytes));
    finish(record, result, Ok(response))
}

/// The parts of an API answer the audit needs; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Answer {
    data: Option<AnswerData>,
}

#[derive(Deserialize)]
struct AnswerData {
    id: Option<String>,
    status: Option<String>,
}

/// The transaction id and status in an API answer, when it has them.
fn transaction_of(body: &[u8]) -> (Option<String>, Option<String>) {
    let Some(data) = serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.data)
    else {
        return (None, None);
    };
    let id = data
        .id
        .filter(|s| s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    (id, data.status)
}

/// The audit outcome of an upstream answer.
fn outcome(status: u16, txn_status: Option<&str>) -> &'static str {
    match (status, txn_status) {
        (200..=299, Some("failed" | "declined")) => "declined",
        (200..=299, _) => "approved",
        (400..=499, _) => "declined",
        _ => "upstream_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(outcome(201, Some("complete")), "approved");
        assert_eq!(outcome(201, Some("failed")), "declined");
        assert_eq!(outcome(422, None), "declined");
        assert_eq!(outcome(500, None), "upstream_error");
    }

    #[test]
    fn transaction_id_is_read_only_when_plain() {
        let (id, status) = transaction_of(br#"{"data":{"id":"abc-123","status":"complete"}}"#);
        assert_eq!(id.as_deref(), Some("abc-123"));
        assert_eq!(status.as_deref(), Some("complete"));
        let (id, _) = transaction_of(br#"{"data":{"id":"<script>"}}"#);
        assert_eq!(id, None);
        assert_eq!(transaction_of(b"not json"), (None, None));
    }
}
