//! Write actions on an existing transaction: capture, refund, cancel.
//!
//! No card data travels here, but money moves, so the same discipline as payments:
//! `transaction.forwarded` is durable before the upstream call, `transaction.completed`
//! follows, and a refusal is audited as `transaction.rejected`.

use http::{Request, Response};
use hyper::body::Incoming;

use super::payments::{base_record, require_json, submit_audit};
use super::{Context, Exchange, forward};
use crate::audit::AuditEvent;
use crate::error::{ApiError, FieldError};
use crate::route::TransactionAction;
use crate::upstream::{self, Outgoing, ProxyBody};

pub(crate) struct Transactions;

impl Transactions {
    pub async fn handle(
        ctx: &Context<'_>,
        transaction_id: &str,
        action: TransactionAction,
        req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let mut record = base_record(ctx, ex, AuditEvent::TransactionForwarded, "forwarded");
        record.transaction_id = Some(transaction_id.to_string());
        record.action = Some(action.as_str().to_string());
        let result = Self::forward(ctx, req, ex, record.clone()).await;
        if let Err(e) = &result
            && !matches!(
                e,
                ApiError::UpstreamTimeout
                    | ApiError::UpstreamUnreachable
                    | ApiError::UpstreamBadResponse
            )
        {
            record.event = AuditEvent::TransactionRejected;
            record.outcome = "rejected".into();
            record.reason = Some(e.reason().to_string());
            submit_audit(ctx.proxy, record);
        }
        result
    }

    async fn forward(
        ctx: &Context<'_>,
        req: Request<Incoming>,
        ex: &mut Exchange,
        record: crate::audit::AuditRecord,
    ) -> Result<Response<ProxyBody>, ApiError> {
        if !ctx.proxy.audit().is_healthy() {
            return Err(ApiError::NotReady("audit log not writable"));
        }
        let (parts, body) = req.into_parts();
        let body = ctx.proxy.read_body(&parts.headers, body).await?;
        if !body.is_empty() {
            require_json(&parts.headers)?;
            if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                return Err(ApiError::Validation(vec![FieldError {
                    source: "body".into(),
                    title: "Malformed JSON",
                    detail: "The request body is not valid JSON".into(),
                }]));
            }
        }
        let out = Outgoing {
            method: parts.method.clone(),
            path_and_query: upstream::path_only(&parts.uri),
            headers: upstream::forwardable_headers(&parts.headers),
            body,
        };
        let done = forward::detached(ctx.proxy, out, record, ex.client).await;
        ex.upstream_latency = done.latency;
        done.response
    }
}
