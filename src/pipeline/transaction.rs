//! Transaction actions, `POST /v2/orders/{uuid}/transactions/{uuid}/{capture,refund,cancel}`:
//! what they add to the pipeline.
//!
//! No card data travels here, but money moves, so the same discipline as payments: they
//! are audited from admission on (`transaction.rejected` for a refusal, `forwarded` made
//! durable before the upstream call, then `completed`), and a body, when there is one,
//! must be JSON.

use bytes::Bytes;
use http::request::Parts;

use super::context::{Audited, AuditedAction, RequestCtx};
use super::payment::require_json;
use crate::audit::AuditLog;
use crate::error::{ApiError, FieldError};
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

/// An empty body (as the SDK sends a capture) or a JSON one, forwarded as it came.
pub(crate) fn validate(head: &Parts, body: Bytes) -> Result<Outgoing, ApiError> {
    if !body.is_empty() {
        require_json(&head.headers)?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(ApiError::Validation(vec![FieldError {
                source: "body".into(),
                title: "Malformed JSON",
                detail: "The request body is not valid JSON".into(),
            }]));
        }
    }
    Ok(Outgoing {
        method: head.method.clone(),
        path_and_query: upstream::path_only(&head.uri),
        headers: upstream::forwardable_headers(&head.headers),
        body,
    })
}
