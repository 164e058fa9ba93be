//! The idempotency phase, between the pre-forward checks and the `forwarded` audit
//! record: replay a completed request's answer, refuse one still in flight (or reusing a
//! key for another request), or claim the key and the order for the forward.
//!
//! Nothing is forwarded on a replay or a refusal. A replay is audited as
//! `payment.replayed` / `transaction.replayed` with the original request's id; a refusal
//! gets its `*.rejected` record like any other (see README.md, "Idempotency and retries").

use http::Response;

use super::auditor::{self, Auditor};
use super::context::{AuditedAction, RequestCtx};
use crate::body::ProxyBody;
use crate::error::ApiError;
use crate::idempotency::{Decision, Idempotency, Ticket, TicketRequest};

/// What the phase decided.
pub(crate) enum Claimed {
    /// The stored answer of the same request, to send as it is.
    Replayed(Response<ProxyBody>),
    /// Forward; the ticket (if the request is tracked) records the outcome.
    Forward(Option<Ticket>),
}

/// Checks an audited request against the keys and orders in flight and the stored answers.
pub(crate) async fn claim(
    idempotency: &Idempotency,
    auditor: &Auditor,
    ctx: &mut RequestCtx<'_>,
    client_id: &str,
) -> Result<Claimed, ApiError> {
    let Some(audited) = ctx.audit.as_ref() else {
        return Ok(Claimed::Forward(None));
    };
    // A transaction action without a key has no fingerprint: nothing to track.
    let Some(fingerprint) = audited.fingerprint else {
        return Ok(Claimed::Forward(None));
    };
    let order = match audited.action {
        AuditedAction::Payment => audited.limit_keys.as_ref().map(|k| k.order),
        AuditedAction::Transaction(_) => None,
    };
    let request = TicketRequest {
        client: client_id,
        key: audited.idempotency_key,
        fingerprint,
        order,
    };
    match idempotency.check(&request).await? {
        Decision::Proceed(ticket) => Ok(Claimed::Forward(Some(ticket))),
        Decision::Replay(answer) => {
            auditor.later(auditor::replayed(ctx, client_id, &answer));
            ctx.audited().replay_of = Some(answer.request_id.clone());
            Ok(Claimed::Replayed(answer.replay()))
        }
    }
}
