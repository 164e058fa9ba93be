//! The claim API the pipeline uses: [`Idempotency::check`] before the forward; the
//! [`Ticket`] it returns records the outcome (`ticket.rs`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Digest;
use super::answer::StoredAnswer;
use super::codec::{self, Decoded};
use super::orders::OrdersInFlight;
use super::redis::{RedisIdempotency, Unavailable, duplicate_name, key_name, order_name};
use super::store::{LocalStore, Lookup};
use super::ticket::{HeldKey, HeldOrder, Ticket};
use crate::config::{Config, IdempotencyConfig, OnStoreError};
use crate::error::ApiError;
use crate::keyed::KeyedHash;

/// How often expired keys are dropped, so memory follows the traffic.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Idempotency {
    local: Arc<LocalStore>,
    orders: Arc<OrdersInFlight>,
    /// With `limits.redis_url`: the store every replica shares.
    shared: Option<Arc<RedisIdempotency>>,
    /// `limits.on_store_error = "deny"`: Redis down is a 503, not the local store.
    deny_when_down: bool,
    /// Keys the duplicate window's implicit keys.
    hasher: KeyedHash,
    ttl: Duration,
    window: Option<Duration>,
    one_payment_per_order: bool,
    /// How long a shared order claim may outlive a replica that crashed holding it: longer
    /// than any payment can run.
    order_hold: Duration,
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

impl Idempotency {
    /// Starts the store and its pruning; runs inside the runtime.
    pub(crate) fn start(config: &Config) -> Idempotency {
        use secrecy::ExposeSecret;
        let limits = &config.limits;
        let shared = limits
            .redis_url
            .as_deref()
            .map(|url| Arc::new(RedisIdempotency::new(url, limits.redis_timeout)));
        let mut idem = Idempotency::local(&config.idempotency, config.audit.key.expose_secret());
        idem.shared = shared;
        idem.deny_when_down = limits.on_store_error == OnStoreError::Deny;
        idem.order_hold = config.upstream.timeout * 2 + Duration::from_secs(60);
        idem
    }

    /// This replica's own store only; runs inside the runtime (it starts the pruning).
    fn local(config: &IdempotencyConfig, key: &[u8]) -> Idempotency {
        let local = Arc::new(LocalStore::new(config.max_keys));
        tokio::spawn(prune(Arc::downgrade(&local)));
        Idempotency {
            local,
            orders: Arc::default(),
            shared: None,
            deny_when_down: true,
            hasher: KeyedHash::new(key),
            ttl: config.ttl,
            window: config.duplicate_window,
            one_payment_per_order: config.one_payment_per_order,
            order_hold: Duration::from_secs(60),
        }
    }

    /// Replay, refuse (409 in flight, 422 key reused, 503 store full or down) or proceed.
    pub(crate) async fn check(&self, req: &TicketRequest<'_>) -> Result<Decision, ApiError> {
        if let Some(shared) = &self.shared {
            match self.check_shared(shared, req).await {
                Ok(decision) => return decision,
                Err(Unavailable) if self.deny_when_down => {
                    return Err(ApiError::NotReady("idempotency store unavailable"));
                }
                // on_store_error = "local": this replica's own store.
                Err(Unavailable) => {}
            }
        }
        self.check_local(req)
    }

    fn ticket(&self, req: &TicketRequest<'_>, shared: Option<Arc<RedisIdempotency>>) -> Ticket {
        Ticket {
            local: self.local.clone(),
            shared,
            fingerprint: req.fingerprint,
            key: None,
            order: None,
            duplicate: None,
            ttl: self.ttl,
        }
    }

    fn check_local(&self, req: &TicketRequest<'_>) -> Result<Decision, ApiError> {
        let now = Instant::now();
        let mut ticket = self.ticket(req, None);
        if let Some(key) = req.key {
            match self.local.claim(&key, &req.fingerprint, now) {
                Lookup::Claimed(claim) => ticket.key = Some(HeldKey::Local { key, claim }),
                Lookup::Done(answer) => return Ok(Decision::Replay(answer)),
                Lookup::InFlight => return Err(ApiError::IdempotencyInFlight),
                Lookup::Mismatch => return Err(ApiError::IdempotencyMismatch),
                Lookup::Full => return Err(ApiError::NotReady("idempotency store full")),
            }
        } else if let Some((duplicate, window)) = self.duplicate_key(req) {
            if let Some(answer) = self.local.answer(&duplicate, now) {
                return Ok(Decision::Replay(answer));
            }
            ticket.duplicate = Some((duplicate, window));
        }
        if let Some(order) = req.order.filter(|_| self.one_payment_per_order) {
            // Refused: dropping the ticket releases the key just claimed.
            let guard = self.orders.enter(order).ok_or(ApiError::OrderInFlight)?;
            ticket.order = Some(HeldOrder::Local { _guard: guard });
        }
        Ok(Decision::Proceed(ticket))
    }

    /// The same check against Redis; `Err` when Redis could not answer.
    async fn check_shared(
        &self,
        shared: &Arc<RedisIdempotency>,
        req: &TicketRequest<'_>,
    ) -> Result<Result<Decision, ApiError>, Unavailable> {
        let mut ticket = self.ticket(req, Some(shared.clone()));
        if let Some(key) = req.key {
            let value = codec::in_flight(&token(), &req.fingerprint);
            match shared.claim(&key_name(&key), &value, self.ttl).await? {
                None => ticket.key = Some(HeldKey::Shared { key, value }),
                Some(existing) => return Ok(refusal(&existing, &req.fingerprint)),
            }
        } else if let Some((duplicate, window)) = self.duplicate_key(req) {
            let existing = shared.get(&duplicate_name(&duplicate)).await?;
            if let Some((_, Decoded::Done(answer))) = existing.as_deref().and_then(codec::decode) {
                return Ok(Ok(Decision::Replay(Arc::new(answer))));
            }
            ticket.duplicate = Some((duplicate, window));
        }
        if let Some(order) = req.order.filter(|_| self.one_payment_per_order) {
            let token = token();
            let name = order_name(&order);
            if shared
                .claim(&name, &token, self.order_hold)
                .await?
                .is_some()
            {
                return Ok(Err(ApiError::OrderInFlight));
            }
            ticket.order = Some(HeldOrder::Shared { order, token });
        }
        Ok(Ok(Decision::Proceed(ticket)))
    }

    /// The implicit key of a payment without `Idempotency-Key` (same client, same
    /// request) and the window, when the duplicate window applies.
    fn duplicate_key(&self, req: &TicketRequest<'_>) -> Option<(Digest, Duration)> {
        let window = self.window?;
        req.order?;
        let client_len = (req.client.len() as u32).to_le_bytes();
        let key = self.hasher.mac(&[
            b"duplicate-window\0",
            &client_len,
            req.client.as_bytes(),
            &req.fingerprint,
        ]);
        Some((key, window))
    }
}

/// What a key already claimed in the shared store means for this request: its replay
/// (`Ok`), or a refusal. An entry that cannot be read counts as in flight.
fn refusal(existing: &str, fingerprint: &Digest) -> Result<Decision, ApiError> {
    match codec::decode(existing) {
        Some((fp, _)) if fp != *fingerprint => Err(ApiError::IdempotencyMismatch),
        Some((_, Decoded::Done(answer))) => Ok(Decision::Replay(Arc::new(answer))),
        _ => Err(ApiError::IdempotencyInFlight),
    }
}

/// A random claim token: tells this claim from any other replica's.
fn token() -> String {
    uuid::Uuid::now_v7().simple().to_string()
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
    use bytes::Bytes;
    use http::StatusCode;

    use super::*;
    use crate::idempotency::Settled;
    use crate::outcome::Outcome;

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

    async fn proceed(idem: &Idempotency, req: TicketRequest<'_>) -> Ticket {
        match idem.check(&req).await {
            Ok(Decision::Proceed(t)) => t,
            Ok(Decision::Replay(_)) => panic!("replayed"),
            Err(e) => panic!("refused: {e:?}"),
        }
    }

    #[tokio::test]
    async fn key_in_flight_then_replayed_other_request_refused() {
        let idem = Idempotency::local(&config(None), b"k");
        let ticket = proceed(&idem, request(Some([9; 32]), 1)).await;
        let again = idem.check(&request(Some([9; 32]), 1)).await;
        assert!(matches!(again, Err(ApiError::IdempotencyInFlight)));
        ticket.finish(answered(Outcome::Approved)).await;
        let again = idem.check(&request(Some([9; 32]), 1)).await;
        assert!(matches!(again, Ok(Decision::Replay(_))));
        let other = idem.check(&request(Some([9; 32]), 2)).await;
        assert!(matches!(other, Err(ApiError::IdempotencyMismatch)));
    }

    #[tokio::test]
    async fn one_payment_per_order_and_a_refusal_frees_the_key() {
        let idem = Idempotency::local(&config(None), b"k");
        let first = proceed(&idem, request(None, 1)).await;
        let second = idem.check(&request(Some([9; 32]), 1)).await;
        assert!(matches!(second, Err(ApiError::OrderInFlight)));
        drop(first);
        proceed(&idem, request(Some([9; 32]), 1)).await;
    }

    #[tokio::test]
    async fn duplicate_window_keeps_only_approved_payments() {
        let idem = Idempotency::local(&config(Some(Duration::from_secs(600))), b"k");
        let t = proceed(&idem, request(None, 1)).await;
        t.finish(answered(Outcome::Declined)).await;
        let t = proceed(&idem, request(None, 1)).await;
        t.finish(answered(Outcome::Approved)).await;
        let again = idem.check(&request(None, 1)).await;
        assert!(matches!(again, Ok(Decision::Replay(_))));
        proceed(&idem, request(None, 2)).await;
    }

    #[tokio::test]
    async fn unknown_outcome_holds_the_key() {
        let idem = Idempotency::local(&config(None), b"k");
        let t = proceed(&idem, request(Some([9; 32]), 1)).await;
        t.finish(Settled::Unknown).await;
        let again = idem.check(&request(Some([9; 32]), 1)).await;
        assert!(matches!(again, Err(ApiError::IdempotencyInFlight)));
    }

    #[test]
    fn a_shared_entry_decides_replay_or_refusal() {
        let fp = [1; 32];
        assert!(matches!(
            refusal(&codec::in_flight("t", &fp), &fp),
            Err(ApiError::IdempotencyInFlight)
        ));
        assert!(matches!(
            refusal(&codec::unknown(&[2; 32]), &fp),
            Err(ApiError::IdempotencyMismatch)
        ));
        assert!(matches!(
            refusal("", &fp),
            Err(ApiError::IdempotencyInFlight)
        ));
    }
}
