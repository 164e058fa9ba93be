//! The pipeline's side of the audit log: building a request's records from its context,
//! writing them durably or in the background, and the bookkeeping that lets shutdown wait
//! for records still on their way.
//!
//! Records are built here, in one place, from the request's [`Audited`] facts: the
//! payment and transaction routes only fill those facts in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::context::{Audited, AuditedAction, RequestCtx};
use crate::audit::{AuditError, AuditEvent, AuditLog, AuditRecord, Submit};
use crate::error::ApiError;
use crate::idempotency::StoredAnswer;
use crate::metrics::AuditMetrics;
use crate::outcome::Outcome;

/// The audit log and the count of audit work still running.
#[derive(Clone)]
pub(crate) struct Auditor {
    pub log: AuditLog,
    running: Arc<Running>,
    pub metrics: AuditMetrics,
}

/// Counts detached upstream calls and background audit writes still running.
#[derive(Default)]
struct Running {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One piece of running audit work; shutdown waits until every one is dropped.
pub(crate) struct Work(Arc<Running>);

impl Drop for Work {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Auditor {
    pub(crate) fn new(log: AuditLog, metrics: AuditMetrics) -> Auditor {
        Auditor {
            log,
            running: Arc::default(),
            metrics,
        }
    }

    /// Marks work that must finish before the audit log closes.
    pub(crate) fn work(&self) -> Work {
        self.running.count.fetch_add(1, Ordering::AcqRel);
        Work(self.running.clone())
    }

    /// Waits (up to `limit`) for running work, so the `completed` records of payments
    /// whose storefront already went away are written before the audit log closes.
    pub(crate) async fn drain(&self, limit: Duration) {
        let idle = async {
            loop {
                let notified = self.running.idle.notified();
                if self.running.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, idle).await.is_err() {
            tracing::warn!(
                "shutdown: forwarded requests still running; their outcome must be reconciled"
            );
        }
    }

    /// Appends a record and resolves once it is durable (`forwarded` before the upstream
    /// call, `completed` before the answer).
    /// Timed: this wait is on every payment's path, twice.
    pub(crate) async fn durable(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let start = Instant::now();
        let result = self.log.append(record).await;
        self.metrics
            .durable_seconds
            .observe(start.elapsed().as_secs_f64());
        result
    }

    /// Writes a record the response does not wait for (rejections). Queued
    /// directly when there is room; only a full queue costs a task that waits for room. A
    /// record that cannot be written is logged by the writer, which also marks the log
    /// unhealthy, and that stops further payments.
    pub(crate) fn later(&self, record: AuditRecord) {
        match self.log.submit(record) {
            Ok(()) => {}
            Err(Submit::Full(record)) => {
                let log = self.log.clone();
                let work = self.work();
                tokio::spawn(async move {
                    let _work = work;
                    if let Err(e) = log.append(*record).await {
                        tracing::error!(error = %e, "audit record lost");
                    }
                });
            }
            Err(Submit::Closed) => tracing::error!("audit record lost: the audit log is closed"),
        }
    }

    /// Audits a refusal of an audited request that was never forwarded. Requests that
    /// reached the upstream already have their `completed` record.
    pub(crate) fn refused(&self, ctx: &RequestCtx<'_>, client_id: &str, err: &ApiError) {
        let Some(audited) = &ctx.audit else { return };
        if audited.outcome.was_forwarded() {
            return;
        }
        let event = match audited.action {
            AuditedAction::Payment => AuditEvent::PaymentRejected,
            AuditedAction::Transaction(_) => AuditEvent::TransactionRejected,
        };
        let mut record = record(ctx, audited, client_id, event, Outcome::Rejected);
        record.reason = Some(err.reason().to_string());
        self.later(record);
    }
}

/// The `forwarded` record of an audited request about to go upstream.
pub(crate) fn forwarded(ctx: &RequestCtx<'_>, client_id: &str) -> AuditRecord {
    let audited = ctx.audit.as_ref().expect("only audited requests are");
    let event = match audited.action {
        AuditedAction::Payment => AuditEvent::PaymentForwarded,
        AuditedAction::Transaction(_) => AuditEvent::TransactionForwarded,
    };
    let mut record = record(ctx, audited, client_id, event, Outcome::Forwarded);
    record.gateway = audited.gateway.clone();
    record
}

/// The `replayed` record of an audited request answered with a stored answer, or the
/// `resolved` record of a request whose unknown outcome was found among the order's
/// transactions: the original request's id and outcome, the status it was answered with.
pub(crate) fn replayed(
    ctx: &RequestCtx<'_>,
    client_id: &str,
    answer: &StoredAnswer,
    resolved: bool,
) -> AuditRecord {
    let audited = ctx.audit.as_ref().expect("only audited requests are");
    let event = match (audited.action, resolved) {
        (AuditedAction::Payment, false) => AuditEvent::PaymentReplayed,
        (AuditedAction::Payment, true) => AuditEvent::PaymentResolved,
        (AuditedAction::Transaction(_), false) => AuditEvent::TransactionReplayed,
        (AuditedAction::Transaction(_), true) => AuditEvent::TransactionResolved,
    };
    let mut record = record(ctx, audited, client_id, event, answer.outcome);
    record.gateway = audited.gateway.clone();
    record.upstream_status = Some(answer.status.as_u16());
    record.original_request_id = Some(answer.request_id.clone());
    record
}

/// What every record of a request holds: who, from where, which order, and what.
fn record(
    ctx: &RequestCtx<'_>,
    audited: &Audited,
    client_id: &str,
    event: AuditEvent,
    outcome: Outcome,
) -> AuditRecord {
    let mut record = AuditRecord::new(
        event,
        ctx.id.as_str(),
        client_id,
        ctx.conn.remote.ip().to_string(),
        outcome,
    );
    record.order_id = ctx.order_id().map(str::to_string);
    match audited.action {
        AuditedAction::Payment => {
            record.method = audited.method.map(str::to_string);
            record.card = audited.card.clone();
        }
        AuditedAction::Transaction(action) => {
            record.transaction_id = ctx.transaction_id().map(str::to_string);
            record.action = Some(action.as_str().to_string());
        }
    }
    record
}
