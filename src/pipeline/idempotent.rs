//! The idempotency phase, between the pre-forward checks and the `forwarded` audit
//! record: replay a completed request's answer, refuse one still in flight (or reusing a
//! key for another request), resolve an unknown outcome from the order's transactions, or
//! claim the key and the order for the forward.
//!
//! Nothing is forwarded on a replay, a resolution or a refusal. A replay is audited as
//! `payment.replayed` / `transaction.replayed` with the original request's id, a
//! resolution as `payment.resolved` / `transaction.resolved` with the transaction found; a refusal gets its
//! `*.rejected` record like any other (see README.md, "Idempotency and retries").

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Response, StatusCode};

use super::auditor::{self, Auditor};
use super::call::Caller;
use super::context::{AuditedAction, RequestCtx};
use crate::body::{ProxyBody, read_limited};
use crate::error::ApiError;
use crate::idempotency::{
    Decision, Idempotency, NotAList, Probe, Resolution, StoredAnswer, Ticket, TicketRequest,
    Unresolved, matching_transaction,
};
use crate::outcome::Outcome;
use crate::route::TransactionAction;
use crate::upstream::Outgoing;

/// An order's transaction list is small; anything bigger is not one.
const MAX_LIST: usize = 1 << 20;
const LIST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the phase decided.
pub(crate) enum Claimed {
    /// The stored answer of the same request, to send as it is.
    Replayed(Response<ProxyBody>),
    /// Forward; the ticket (if the request is tracked) records the outcome.
    Forward(Option<Ticket>),
}

/// What the phase needs besides the request.
pub(crate) struct Phase<'a> {
    pub idempotency: &'a Idempotency,
    pub auditor: &'a Auditor,
    /// Reads an order's transactions, to resolve an unknown outcome.
    pub caller: &'a Caller,
}

impl Phase<'_> {
    /// Checks an audited request against the keys and orders in flight, the stored answers
    /// and the unknown outcomes.
    pub(crate) async fn claim(
        &self,
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
        let (order, probe) = match audited.action {
            AuditedAction::Payment => (
                audited.limit_keys.as_ref().map(|k| k.order),
                audited.method.map(|method| Probe::Created {
                    gateway: audited.gateway.clone(),
                    kind: method.to_string(),
                }),
            ),
            AuditedAction::Transaction(action) => (None, action_probe(action, ctx)),
        };
        let request = TicketRequest {
            client: client_id,
            key: audited.idempotency_key,
            fingerprint,
            order,
            probe,
        };
        match self.idempotency.check(&request).await? {
            Decision::Proceed(ticket) => Ok(Claimed::Forward(Some(ticket))),
            Decision::Replay(answer) => Ok(self.replay(ctx, client_id, &answer)),
            // Boxed: resolving reads the order's transactions upstream, a rare path that
            // would otherwise make every tracked payment's future several times larger.
            Decision::Resolve(unresolved) => {
                Box::pin(self.resolve(ctx, client_id, &request, unresolved)).await
            }
        }
    }

    fn replay(&self, ctx: &mut RequestCtx<'_>, client_id: &str, answer: &StoredAnswer) -> Claimed {
        let record = auditor::replayed(ctx, client_id, answer, false);
        self.auditor.later(record);
        ctx.audited().replay_of = Some(answer.request_id.clone());
        Claimed::Replayed(answer.replay())
    }

    /// An unknown outcome: its transaction, if the order's transactions show it, is the
    /// answer (audited as `payment.resolved`); otherwise the rule in the idempotency
    /// module decides between 409 and forwarding this retry.
    async fn resolve(
        &self,
        ctx: &mut RequestCtx<'_>,
        client_id: &str,
        request: &TicketRequest<'_>,
        unresolved: Unresolved,
    ) -> Result<Claimed, ApiError> {
        // What the API answers: 201 for a new payment, 200 for an action on a transaction.
        let status = match ctx.audit.as_ref().map(|a| a.action) {
            Some(AuditedAction::Payment) => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        let found = match ctx.order_id().filter(|_| unresolved.can_probe()) {
            Some(order) => self.transaction_of(order, &unresolved, status).await,
            None => Ok(None),
        };
        // The list could not be read: nothing can be concluded, so nothing goes through.
        let Ok(found) = found else {
            ctx.audited().resolution = Some("lookup_failed");
            return Err(if request.key.is_some() {
                ApiError::IdempotencyInFlight
            } else {
                ApiError::OrderInFlight
            });
        };
        ctx.audited().resolution = Some(if found.is_some() {
            "resolved"
        } else {
            "not_found"
        });
        match self.idempotency.resolve(request, unresolved, found).await? {
            Resolution::Found(answer) => {
                let record = auditor::replayed(ctx, client_id, &answer, true);
                self.auditor.later(record);
                ctx.audited().replay_of = Some(answer.request_id.clone());
                Ok(Claimed::Replayed(answer.replay()))
            }
            Resolution::Retry(ticket) => Ok(Claimed::Forward(Some(*ticket))),
        }
    }

    /// The first attempt's transaction in the order's transaction list, as its answer;
    /// `Err` when the list could not be read.
    async fn transaction_of(
        &self,
        order: &str,
        unresolved: &Unresolved,
        status: StatusCode,
    ) -> Result<Option<StoredAnswer>, NotAList> {
        let path = format!("/v2/orders/{order}/transactions");
        let out = Outgoing {
            method: Method::GET,
            path_and_query: PathAndQuery::try_from(path).map_err(|_| NotAList)?,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        let called = self.caller.send(out).await.map_err(|_| NotAList)?;
        if !called.response.status().is_success() {
            return Err(NotAList);
        }
        let body = called.response.into_body();
        let list = tokio::time::timeout(LIST_BODY_TIMEOUT, read_limited(body, MAX_LIST))
            .await
            .map_err(|_| NotAList)?
            .map_err(|_| NotAList)?;
        let Some(transaction) = matching_transaction(&list, unresolved.unknown())? else {
            return Ok(None);
        };
        let outcome = Outcome::of_answer(status.as_u16(), transaction["status"].as_str());
        let body = serde_json::json!({ "data": transaction }).to_string();
        Ok(Some(StoredAnswer::storable(
            status,
            Some(http::HeaderValue::from_static("application/json")),
            Bytes::from(body),
            outcome,
            unresolved.original_request_id().to_string(),
        )))
    }
}

/// Where a transaction action's outcome shows: a capture or a refund creates a transaction
/// of that type, a cancel turns the transaction itself `cancelled`, a confirm (after 3-D
/// Secure or PayPal approval) turns a `pending` one `complete`.
fn action_probe(action: TransactionAction, ctx: &RequestCtx<'_>) -> Option<Probe> {
    match action {
        TransactionAction::Capture | TransactionAction::Refund => Some(Probe::Created {
            gateway: None,
            kind: action.as_str().to_string(),
        }),
        TransactionAction::Cancel => Some(Probe::Updated {
            id: ctx.transaction_id()?.to_string(),
            status: "cancelled".to_string(),
        }),
        TransactionAction::Confirm => Some(Probe::Updated {
            id: ctx.transaction_id()?.to_string(),
            status: "complete".to_string(),
        }),
    }
}
