//! The claim API the pipeline uses: [`Idempotency::check`] before the forward; the
//! [`Ticket`] it returns records the outcome (`ticket.rs`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Digest;
use super::answer::StoredAnswer;
use super::codec::{self, Decoded};
use super::orders::OrdersInFlight;
use super::redis::{Claim, RedisIdempotency, Swap, Unavailable, key_name, order_name};
use super::resolve::{Probe, Unresolved, now_ms};
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
    /// How long after it was sent a request without an answer could still complete
    /// upstream: twice `upstream.timeout`.
    unknown_hold: Duration,
}

/// What the check needs to know of a request.
pub(crate) struct TicketRequest<'a> {
    pub client: &'a str,
    /// The `Idempotency-Key`, scoped to the client.
    pub key: Option<Digest>,
    pub fingerprint: Digest,
    /// For payments: their order, of which only one payment may be in flight.
    pub order: Option<uuid::Uuid>,
    /// For payments: their gateway and method, to find their transaction if the outcome
    /// turns out unknown.
    pub probe: Option<Probe>,
}

pub(crate) enum Decision {
    /// The same request completed before: its answer, nothing to forward.
    Replay(Arc<StoredAnswer>),
    /// Forward, and finish the ticket with the outcome.
    Proceed(Ticket),
    /// The same request was forwarded before and its outcome is unknown: look for its
    /// transaction, then [`Idempotency::resolve`].
    Resolve(Unresolved),
}

/// How an unknown outcome was resolved.
pub(crate) enum Resolution {
    /// The first attempt's transaction, as the answer (now kept for the key).
    Found(Arc<StoredAnswer>),
    /// No transaction, and the first attempt can no longer complete: the retry has taken
    /// the key over; forward it.
    Retry(Box<Ticket>),
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
        let mut idem = Idempotency::local(
            &config.idempotency,
            config.audit.fingerprint_key.expose_secret(),
        );
        idem.shared = shared;
        idem.deny_when_down = limits.on_store_error == OnStoreError::Deny;
        idem.order_hold = config.upstream.timeout * 2 + Duration::from_secs(60);
        idem.unknown_hold = config.upstream.timeout * 2;
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
            unknown_hold: Duration::from_secs(80),
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
            window: None,
            ttl: self.ttl,
            probe: req.probe.clone(),
        }
    }

    fn check_local(&self, req: &TicketRequest<'_>) -> Result<Decision, ApiError> {
        let now = Instant::now();
        let mut ticket = self.ticket(req, None);
        if let Some(key) = self.key_of(req, &mut ticket) {
            match self.local.claim(&key, &req.fingerprint, now) {
                Lookup::Claimed(claim) => ticket.key = Some(HeldKey::Local { key, claim }),
                Lookup::Done(answer) => return Ok(Decision::Replay(answer)),
                Lookup::InFlight => return Err(in_flight(req)),
                Lookup::Unknown(unknown) => {
                    return Ok(Decision::Resolve(Unresolved {
                        key,
                        unknown,
                        shared_value: None,
                    }));
                }
                Lookup::Mismatch => return Err(ApiError::IdempotencyMismatch),
                Lookup::Full => return Err(ApiError::NotReady("idempotency store full")),
            }
        }
        self.lock_local_order(&mut ticket, req)?;
        Ok(Decision::Proceed(ticket))
    }

    /// Holds the payment's order in this replica. Refused: dropping the ticket releases
    /// the key it holds.
    fn lock_local_order(
        &self,
        ticket: &mut Ticket,
        req: &TicketRequest<'_>,
    ) -> Result<(), ApiError> {
        if let Some(order) = req.order.filter(|_| self.one_payment_per_order) {
            let guard = self.orders.enter(order).ok_or(ApiError::OrderInFlight)?;
            ticket.order = Some(HeldOrder::Local { _guard: guard });
        }
        Ok(())
    }

    /// Holds the payment's order in Redis (after its key was taken over).
    async fn lock_shared_order(
        &self,
        shared: &RedisIdempotency,
        ticket: &mut Ticket,
        req: &TicketRequest<'_>,
    ) -> Result<Result<(), ApiError>, Unavailable> {
        let Some((held, claim)) = self.order_claim(req) else {
            return Ok(Ok(()));
        };
        if shared.claim(&[claim]).await?.is_some() {
            return Ok(Err(ApiError::OrderInFlight));
        }
        ticket.order = Some(held);
        Ok(Ok(()))
    }

    /// For a payment whose order may have only one payment in flight: the shared order
    /// claim to make, and what the ticket holds once it is made.
    fn order_claim(&self, req: &TicketRequest<'_>) -> Option<(HeldOrder, Claim)> {
        let order = req.order.filter(|_| self.one_payment_per_order)?;
        let token = token();
        let claim = Claim {
            name: order_name(&order),
            value: token.clone(),
            ttl: self.order_hold,
        };
        Some((HeldOrder::Shared { order, token }, claim))
    }

    /// Resolves an unknown outcome with what the order's transactions showed (`found`):
    /// see `resolve.rs` for the rule.
    pub(crate) async fn resolve(
        &self,
        req: &TicketRequest<'_>,
        unresolved: Unresolved,
        found: Option<StoredAnswer>,
    ) -> Result<Resolution, ApiError> {
        let shared = self
            .shared
            .as_ref()
            .filter(|_| unresolved.shared_value.is_some());
        // A payment without a key: its implicit key keeps answers for the window only.
        let window = self.window.filter(|_| req.key.is_none());
        let keep = window.unwrap_or(self.ttl);
        if let Some(answer) = found {
            let answer = Arc::new(answer);
            match (shared, &unresolved.shared_value) {
                (Some(shared), Some(held)) => {
                    let swap = Swap {
                        name: key_name(&unresolved.key),
                        held: held.clone(),
                        value: codec::done(&req.fingerprint, &answer),
                        ttl: keep,
                    };
                    let _ = shared.settle(&[swap]).await;
                }
                _ => {
                    let expires = Instant::now() + keep;
                    let (key, unknown) = (&unresolved.key, &unresolved.unknown);
                    self.local
                        .resolve(key, unknown, Some(answer.clone()), expires);
                }
            }
            return Ok(Resolution::Found(answer));
        }
        let hold = u64::try_from(self.unknown_hold.as_millis()).unwrap_or(u64::MAX);
        let hold_until = unresolved.unknown.sent_at_ms.saturating_add(hold);
        if !unresolved.can_probe() || now_ms() < hold_until {
            return Err(in_flight(req));
        }
        let mut ticket = self.ticket(req, shared.cloned());
        ticket.window = window;
        match (shared, unresolved.shared_value) {
            (Some(shared), Some(held)) => {
                let value = codec::in_flight(&token(), &req.fingerprint);
                let swap = Swap {
                    name: key_name(&unresolved.key),
                    held,
                    value: value.clone(),
                    ttl: self.ttl,
                };
                if shared.settle(&[swap]).await != Ok(1) {
                    return Err(in_flight(req));
                }
                ticket.key = Some(HeldKey::Shared {
                    key: unresolved.key,
                    value,
                });
                match self.lock_shared_order(shared, &mut ticket, req).await {
                    Ok(locked) => locked?,
                    Err(Unavailable) => return Err(in_flight(req)),
                }
            }
            _ => {
                let (key, unknown) = (unresolved.key, &unresolved.unknown);
                let claim = self
                    .local
                    .resolve(&key, unknown, None, Instant::now())
                    .ok_or_else(|| in_flight(req))?;
                ticket.key = Some(HeldKey::Local { key, claim });
                self.lock_local_order(&mut ticket, req)?;
            }
        }
        Ok(Resolution::Retry(Box::new(ticket)))
    }

    /// The same check against Redis, in one round trip: the key and the order are claimed
    /// together or not at all. `Err` when Redis could not answer.
    async fn check_shared(
        &self,
        shared: &Arc<RedisIdempotency>,
        req: &TicketRequest<'_>,
    ) -> Result<Result<Decision, ApiError>, Unavailable> {
        let mut ticket = self.ticket(req, Some(shared.clone()));
        let mut claims = Vec::with_capacity(2);
        let key = self.key_of(req, &mut ticket).map(|key| {
            let value = codec::in_flight(&token(), &req.fingerprint);
            claims.push(Claim {
                name: key_name(&key),
                value: value.clone(),
                ttl: self.ttl,
            });
            HeldKey::Shared { key, value }
        });
        let order = self.order_claim(req).map(|(held, claim)| {
            claims.push(claim);
            held
        });
        if claims.is_empty() {
            return Ok(Ok(Decision::Proceed(ticket)));
        }
        match (shared.claim(&claims).await?, key) {
            (None, key) => {
                ticket.key = key;
                ticket.order = order;
                Ok(Ok(Decision::Proceed(ticket)))
            }
            // The key is claimed first: refused there, it is someone's key.
            (Some((0, existing)), Some(HeldKey::Shared { key, .. })) => {
                Ok(existing_entry(req, key, existing))
            }
            (Some(_), _) => Ok(Err(ApiError::OrderInFlight)),
        }
    }

    /// The key the request is tracked under: its `Idempotency-Key`, or for a payment
    /// without one its implicit key (same client, same request), kept for the duplicate
    /// window when approved (set on the ticket).
    fn key_of(&self, req: &TicketRequest<'_>, ticket: &mut Ticket) -> Option<Digest> {
        if req.key.is_some() {
            return req.key;
        }
        let (key, window) = self.duplicate_key(req)?;
        ticket.window = Some(window);
        Some(key)
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

/// What a key already claimed in the shared store means for this request: its replay,
/// its unknown outcome to resolve, or a refusal. An entry that cannot be read counts as
/// in flight.
fn existing_entry(
    req: &TicketRequest<'_>,
    key: Digest,
    existing: String,
) -> Result<Decision, ApiError> {
    match codec::decode(&existing) {
        Some((fp, _)) if fp != req.fingerprint => Err(ApiError::IdempotencyMismatch),
        Some((_, Decoded::Done(answer))) => Ok(Decision::Replay(Arc::new(answer))),
        Some((_, Decoded::Unknown(unknown))) => Ok(Decision::Resolve(Unresolved {
            key,
            unknown: Arc::new(unknown),
            shared_value: Some(existing),
        })),
        _ => Err(in_flight(req)),
    }
}

/// The 409 for a request whose key is in flight: for a payment without a key, its
/// order is (the same payment is being processed).
fn in_flight(req: &TicketRequest<'_>) -> ApiError {
    if req.key.is_some() {
        ApiError::IdempotencyInFlight
    } else {
        ApiError::OrderInFlight
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
mod tests;
