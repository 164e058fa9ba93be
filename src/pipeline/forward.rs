//! The forward phases: audit `forwarded` -> upstream -> audit `completed`.
//!
//! An audited request (payment, transaction action) runs these in a task of its own.
//! hyper drops a request's future when the storefront disconnects; a payment that may
//! already have reached the API must still run to its end and be audited, or a
//! disconnect would leave a charge nobody recorded. Other routes are sent in the
//! request's own future, unaudited.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use serde::Deserialize;

use super::auditor::Auditor;
use super::call::Caller;
use crate::audit::{AuditEvent, AuditRecord};
use crate::body::{ProxyBody, full_body, read_limited};
use crate::error::ApiError;
use crate::idempotency::{Settled, Ticket, now_ms};
use crate::limit::Limiter;
use crate::outcome::Outcome;
use crate::upstream::Outgoing;

/// API answers to these routes are small JSON documents; anything bigger is not one.
const MAX_ANSWER: usize = 1 << 20;
/// How long the answer body may take once its head arrived.
const ANSWER_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the detached forward needs, shared with its task.
pub(crate) struct Forwarder {
    pub caller: Caller,
    pub auditor: Auditor,
    /// Fed with each payment's result (the decline breaker).
    pub limiter: Arc<Limiter>,
}

/// What an audited forward produced.
pub(crate) struct Completed {
    pub response: Result<Response<ProxyBody>, ApiError>,
    /// [`Outcome::Rejected`] when the `forwarded` record could not be written (then
    /// nothing was sent).
    pub outcome: Outcome,
    /// The status of the API's answer, when it is passed on.
    pub upstream_status: Option<u16>,
    pub latency: Option<Duration>,
}

/// Writes `forwarded` durably, sends `out` upstream once and writes the result durably
/// as its `completed` counterpart before the answer is returned, all independent of the
/// storefront connection: a disconnect at any point after this starts cannot leave a
/// durable `forwarded` record behind without the call it announces. `client_id` feeds
/// the decline breaker (payments). The idempotency `ticket` is settled here too, so a
/// disconnect cannot leave a key claimed or a charge that a retry would repeat.
pub(crate) async fn audited(
    fwd: &Arc<Forwarder>,
    out: Outgoing,
    forwarded: AuditRecord,
    breaker_client: Option<String>,
    ticket: Option<Ticket>,
) -> Completed {
    let fwd = fwd.clone();
    // Boxed: tokio moves a task's whole stage when it finishes and when its output is
    // taken, and this future is kilobytes; the box makes those moves a pointer's.
    let task = tokio::spawn(Box::pin(async move {
        let _work = fwd.auditor.work();
        if let Err(e) = fwd.auditor.durable(forwarded.clone()).await {
            tracing::error!(error = %e, "audit log unavailable: request refused");
            if let Some(ticket) = ticket {
                ticket.finish(Settled::NotSent).await;
            }
            return Completed {
                response: Err(ApiError::NotReady("audit log not writable")),
                outcome: Outcome::Rejected,
                upstream_status: None,
                latency: None,
            };
        }
        let sent_at_ms = now_ms();
        let sent = fwd.caller.send(out).await;
        let latency = sent.as_ref().ok().map(|c| c.latency);
        let sent = sent.map(|c| c.response);
        let done = complete(forwarded, sent, latency).await;
        if let Some(ticket) = ticket {
            ticket.finish(settled(&done, sent_at_ms)).await;
        }
        if let (Some(declined), Some(client)) = (done.declined, breaker_client) {
            fwd.limiter.record_outcome(&client, declined);
        }
        // Durable before the answer goes out: a storefront told "2xx" must find the
        // payment completed in the audit log even if payshim is killed right after
        // (written in the background, a SIGKILL could lose it). If the log cannot take
        // it, the API's answer still goes out (the charge happened) and the
        // `forwarded` record lists the payment for reconciliation.
        if let Err(e) = fwd.auditor.durable(done.record).await {
            fwd.auditor.metrics.completed_lost.inc();
            tracing::error!(error = %e, "audit log unavailable: completed record lost, \
                 the request is listed by `payshim audit pending`");
        }
        done.completed
    }));
    task.await.unwrap_or_else(|_| Completed {
        response: Err(ApiError::UpstreamBadResponse),
        outcome: Outcome::UpstreamError,
        upstream_status: None,
        latency: None,
    })
}

/// The `completed` record and what the request gets.
struct Done {
    record: AuditRecord,
    completed: Completed,
    /// For a payment the API answered: whether it was declined.
    declined: Option<bool>,
    /// The answer's body, when the API answered.
    body: Option<Bytes>,
}

/// What the idempotency ticket records: the answer, or an unknown outcome (the request
/// was sent at `sent_at_ms`, the answer never came).
fn settled(done: &Done, sent_at_ms: u64) -> Settled {
    match (&done.completed.response, &done.body) {
        (Ok(response), Some(body)) => Settled::Answered {
            status: response.status(),
            content_type: response.headers().get(http::header::CONTENT_TYPE).cloned(),
            body: body.clone(),
            outcome: done.completed.outcome,
            request_id: done.record.request_id.clone(),
        },
        _ => Settled::Unknown {
            sent_at_ms,
            request_id: done.record.request_id.clone(),
        },
    }
}

/// Buffers the (small) answer to read its transaction id and status, builds the
/// `completed` record, and returns the answer unchanged.
async fn complete(
    mut record: AuditRecord,
    sent: Result<Response<ProxyBody>, ApiError>,
    latency: Option<Duration>,
) -> Done {
    let payment = record.event == AuditEvent::PaymentForwarded;
    record.event = if payment {
        AuditEvent::PaymentCompleted
    } else {
        AuditEvent::TransactionCompleted
    };
    record.latency_ms = latency.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
    let finish = |mut record: AuditRecord,
                  outcome,
                  response: Result<Response<ProxyBody>, ApiError>,
                  declined| {
        record.outcome = outcome;
        let upstream_status = response.as_ref().ok().map(|r| r.status().as_u16());
        Done {
            record,
            completed: Completed {
                response,
                outcome,
                upstream_status,
                latency,
            },
            declined,
            body: None,
        }
    };
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            record.reason = Some(e.reason().to_string());
            let outcome = match e {
                ApiError::UpstreamTimeout => Outcome::Timeout,
                _ => Outcome::UpstreamError,
            };
            return finish(record, outcome, Err(e), None);
        }
    };
    let (parts, body) = response.into_parts();
    record.upstream_status = Some(parts.status.as_u16());
    let read = tokio::time::timeout(ANSWER_BODY_TIMEOUT, read_limited(body, MAX_ANSWER));
    let Ok(Ok(bytes)) = read.await else {
        record.reason = Some("upstream answer unreadable".into());
        let err = Err(ApiError::UpstreamBadResponse);
        return finish(record, Outcome::UpstreamError, err, None);
    };
    let (transaction_id, txn_status) = transaction_of(&bytes);
    let outcome = Outcome::of_answer(parts.status.as_u16(), txn_status.as_deref());
    // A transaction action keeps the id it was addressed to.
    if record.transaction_id.is_none() {
        record.transaction_id = transaction_id;
    }
    let declined = payment.then_some(outcome == Outcome::Declined);
    let response = Response::from_parts(parts, full_body(bytes.clone()));
    let mut done = finish(record, outcome, Ok(response), declined);
    done.body = Some(bytes);
    done
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

#[cfg(test)]
mod tests {
    use super::*;

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
