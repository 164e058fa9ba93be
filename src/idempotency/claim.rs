//! The claim/complete API the pipeline uses: [`Idempotency::check`] before the forward,
//! [`Ticket::finish`] once its outcome is known.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::Digest;
use super::answer::StoredAnswer;
use super::orders::{OrderGuard, OrdersInFlight};
use super::store::{LocalStore, Lookup, Settle};
use crate::config::IdempotencyConfig;
use crate::error::ApiError;
use crate::keyed::KeyedHash;
use crate::outcome::Outcome;

/// How often expired keys are dropped, so memory follows the traffic.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Idempotency {
    store: Arc<LocalStore>,
    orders: Arc<OrdersInFlight>,
    /// Keys the duplicate window's implicit keys.
    hasher: KeyedHash,
    ttl: Duration,
    window: Option<Duration>,
    one_payment_per_order: bool,
}

/// What the check needs to know of a request.
pub(crate) struct TicketRequest<'a> {
    pub client: &'a str,
    /// The `Idempotency-Key`, scoped to the client.
    pub key: Option<Digest>,
    pub fingerprint: Digest,
    /// For payments: their order, of which only one payment may be in flight.
    pub order: Option<uuid::Uuid>,
}

pub(crate) enum Decision {
    /// The same request completed before: its answer, nothing to forward.
    Replay(Arc<StoredAnswer>),
    /// Forward, and finish the ticket with the outcome.
    Proceed(Ticket),
}

/// A request's claims (its key, its order) until its outcome is recorded. Dropped
/// without [`Ticket::finish`], it releases them: nothing was forwarded.
pub(crate) struct Ticket {
    store: Arc<LocalStore>,
    claim: Option<(Digest, u64)>,
    /// Where a successful payment without a key is kept for the duplicate window.
    duplicate: Option<(Digest, Duration)>,
    _order: Option<OrderGuard>,
    ttl: Duration,
}

/// How a forwarded request ended.
pub(crate) enum Settled {
    /// Nothing was sent upstream.
    NotSent,
    /// Sent, but no answer came: it may still complete upstream.
    Unknown,
    /// The upstream answered.
    Answered {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        outcome: Outcome,
        request_id: String,
    },
}

impl Idempotency {
    /// Starts the store and its pruning; runs inside the runtime.
    pub(crate) fn start(config: &IdempotencyConfig, key: &[u8]) -> Idempotency {
        let store = Arc::new(LocalStore::new(config.max_keys));
        tokio::spawn(prune(Arc::downgrade(&store)));
        Idempotency {
            store,
            orders: Arc::default(),
            hasher: KeyedHash::new(key),
            ttl: config.ttl,
            window: config.duplicate_window,
            one_payment_per_order: config.one_payment_per_order,
        }
    }

    /// Replay, refuse (409 in flight, 422 key reused, 503 store full) or proceed.
    pub(crate) fn check(&self, req: &TicketRequest<'_>) -> Result<Decision, ApiError> {
        let now = Instant::now();
        let mut ticket = Ticket {
            store: self.store.clone(),
            claim: None,
            duplicate: None,
            _order: None,
            ttl: self.ttl,
        };
        if let Some(key) = req.key {
            match self.store.claim(&key, &req.fingerprint, now) {
                Lookup::Claimed(claim) => ticket.claim = Some((key, claim)),
                Lookup::Done(answer) => return Ok(Decision::Replay(answer)),
                Lookup::InFlight => return Err(ApiError::IdempotencyInFlight),
                Lookup::Mismatch => return Err(ApiError::IdempotencyMismatch),
                Lookup::Full => return Err(ApiError::NotReady("idempotency store full")),
            }
        } else if let (Some(window), Some(_)) = (self.window, req.order) {
            let duplicate = self.duplicate_key(req.client, &req.fingerprint);
            if let Some(answer) = self.store.answer(&duplicate, now) {
                return Ok(Decision::Replay(answer));
            }
            ticket.duplicate = Some((duplicate, window));
        }
        if let Some(order) = req.order.filter(|_| self.one_payment_per_order) {
            // Refused: dropping the ticket releases the key just claimed.
            ticket._order = Some(self.orders.enter(order).ok_or(ApiError::OrderInFlight)?);
        }
        Ok(Decision::Proceed(ticket))
    }

    /// The implicit key of a payment without `Idempotency-Key`: same client, same request.
    fn duplicate_key(&self, client: &str, fingerprint: &Digest) -> Digest {
        let client_len = (client.len() as u32).to_le_bytes();
        self.hasher.mac(&[
            b"duplicate-window\0",
            &client_len,
            client.as_bytes(),
            fingerprint,
        ])
    }
}

impl Ticket {
    /// Records the outcome: the answer is kept for the key (and, for a successful payment
    /// without a key, for the duplicate window); an unknown outcome keeps the key claimed,
    /// so a retry cannot charge again; nothing sent frees the key.
    pub(crate) fn finish(mut self, settled: Settled) {
        let now = Instant::now();
        let (settle, approved) = match settled {
            Settled::NotSent => (Settle::Release, None),
            Settled::Unknown => (Settle::Unknown, None),
            Settled::Answered {
                status,
                content_type,
                body,
                outcome,
                request_id,
            } => match StoredAnswer::storable(status, content_type, body, outcome, request_id) {
                Some(answer) => {
                    let answer = Arc::new(answer);
                    let approved = (outcome == Outcome::Approved).then(|| answer.clone());
                    (Settle::Done(answer), approved)
                }
                None => {
                    tracing::warn!("answer not kept for replay: it looks like it holds card data");
                    (Settle::Release, None)
                }
            },
        };
        if let (Some((key, window)), Some(answer)) = (self.duplicate.take(), approved) {
            self.store.put(&key, answer, now, now + window);
        }
        if let Some((key, claim)) = self.claim.take() {
            self.store.settle(&key, claim, settle, now + self.ttl);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((key, claim)) = self.claim.take() {
            self.store
                .settle(&key, claim, Settle::Release, Instant::now());
        }
    }
}

/// Drops expired keys every [`PRUNE_EVERY`] until the store goes away.
async fn prune(store: Weak<LocalStore>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        store.prune(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: Option<Duration>) -> IdempotencyConfig {
        IdempotencyConfig {
            ttl: Duration::from_secs(3600),
            max_keys: 100,
            duplicate_window: window,
            one_payment_per_order: true,
        }
    }

    fn answered(outcome: Outcome) -> Settled {
        Settled::Answered {
            status: StatusCode::CREATED,
            content_type: None,
            body: Bytes::from_static(b"{\"data\":{}}"),
            outcome,
            request_id: "r1".into(),
        }
    }

    fn request(key: Option<Digest>, fingerprint: u8) -> TicketRequest<'static> {
        TicketRequest {
            client: "web-eu",
            key,
            fingerprint: [fingerprint; 32],
            order: Some(uuid::Uuid::from_u128(1)),
        }
    }

    fn proceed(d: Result<Decision, ApiError>) -> Ticket {
        match d {
            Ok(Decision::Proceed(t)) => t,
            Ok(Decision::Replay(_)) => panic!("replayed"),
            Err(e) => panic!("refused: {e:?}"),
        }
    }

    #[tokio::test]
    async fn key_in_flight_then_replayed_other_request_refused() {
        let idem = Idempotency::start(&config(None), b"k");
        let ticket = proceed(idem.check(&request(Some([9; 32]), 1)));
        assert!(matches!(
            idem.check(&request(Some([9; 32]), 1)),
            Err(ApiError::IdempotencyInFlight)
        ));
        ticket.finish(answered(Outcome::Approved));
        assert!(matches!(
            idem.check(&request(Some([9; 32]), 1)),
            Ok(Decision::Replay(_))
        ));
        assert!(matches!(
            idem.check(&request(Some([9; 32]), 2)),
            Err(ApiError::IdempotencyMismatch)
        ));
    }

    #[tokio::test]
    async fn one_payment_per_order_and_a_refusal_frees_the_key() {
        let idem = Idempotency::start(&config(None), b"k");
        let first = proceed(idem.check(&request(None, 1)));
        assert!(matches!(
            idem.check(&request(Some([9; 32]), 1)),
            Err(ApiError::OrderInFlight)
        ));
        drop(first);
        proceed(idem.check(&request(Some([9; 32]), 1)));
    }

    #[tokio::test]
    async fn duplicate_window_keeps_only_approved_payments() {
        let idem = Idempotency::start(&config(Some(Duration::from_secs(600))), b"k");
        proceed(idem.check(&request(None, 1))).finish(answered(Outcome::Declined));
        proceed(idem.check(&request(None, 1))).finish(answered(Outcome::Approved));
        assert!(matches!(
            idem.check(&request(None, 1)),
            Ok(Decision::Replay(_))
        ));
        proceed(idem.check(&request(None, 2)));
    }

    #[tokio::test]
    async fn unknown_outcome_holds_the_key() {
        let idem = Idempotency::start(&config(None), b"k");
        proceed(idem.check(&request(Some([9; 32]), 1))).finish(Settled::Unknown);
        assert!(matches!(
            idem.check(&request(Some([9; 32]), 1)),
            Err(ApiError::IdempotencyInFlight)
        ));
    }
}
