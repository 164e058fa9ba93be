//! Transaction actions,
//! `POST /v2/orders/{uuid}/transactions/{uuid}/{capture,refund,cancel,confirm}`: what they
//! add to the pipeline.
//!
//! No card data travels here, but money moves, so the same discipline as payments: they
//! are audited from admission on (`transaction.rejected` for a refusal, `forwarded` made
//! durable before the upstream call, then `completed`), and a body, when there is one,
//! must be JSON with only the members the action takes.

use bytes::Bytes;
use http::request::Parts;

use super::context::{Audited, AuditedAction, RequestCtx};
use super::payment::require_json;
use crate::audit::AuditLog;
use crate::error::ApiError;
use crate::payment::check_transaction_body;
use crate::route::TransactionAction;
use crate::upstream::{self, Outgoing};

/// Starts the action's audit and refuses it while the audit log cannot be written.
pub(crate) fn before_body(
    ctx: &mut RequestCtx<'_>,
    action: TransactionAction,
    audit: &AuditLog,
) -> Result<(), ApiError> {
    ctx.audit = Some(Audited::new(AuditedAction::Transaction(action)));
    if !audit.is_healthy() {
        return Err(ApiError::NotReady("audit log not writable"));
    }
    Ok(())
}

/// An empty body (as the SDK sends a capture) or a JSON one whose members the action takes
/// (`payment::check_transaction_body`), forwarded as it came.
pub(crate) fn validate(
    head: &Parts,
    action: TransactionAction,
    body: Bytes,
) -> Result<Outgoing, ApiError> {
    if !body.is_empty() {
        require_json(&head.headers)?;
        check_transaction_body(action, &body).map_err(ApiError::Validation)?;
    }
    Ok(Outgoing {
        method: head.method.clone(),
        path_and_query: upstream::path_only(&head.uri),
        headers: upstream::forwardable_headers(&head.headers),
        body,
    })
}
