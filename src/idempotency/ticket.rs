//! [`Ticket`]: a request's claims (its key, its order) from the check until its outcome
//! is recorded, in the local store or in Redis, wherever the check made them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::Digest;
use super::answer::StoredAnswer;
use super::codec;
use super::orders::OrderGuard;
use super::redis::{RedisIdempotency, Swap, key_name, order_name};
use super::resolve::{Probe, UnknownOutcome};
use super::store::{LocalStore, Settle};
use crate::outcome::Outcome;

/// A claimed key.
pub(super) enum HeldKey {
    Local {
        key: Digest,
        claim: u64,
    },
    /// `value` is the in-flight entry written, which settling compares against.
    Shared {
        key: Digest,
        value: String,
    },
}

/// A held order.
pub(super) enum HeldOrder {
    /// Released when dropped.
    Local {
        _guard: OrderGuard,
    },
    Shared {
        order: uuid::Uuid,
        token: String,
    },
}

/// A request's claims until its outcome is recorded. Dropped without [`Ticket::finish`],
/// it releases them: nothing was forwarded.
pub(crate) struct Ticket {
    pub(super) local: Arc<LocalStore>,
    pub(super) shared: Option<Arc<RedisIdempotency>>,
    pub(super) fingerprint: Digest,
    pub(super) key: Option<HeldKey>,
    pub(super) order: Option<HeldOrder>,
    /// For a payment without a key (its key is implicit): how long an approved answer is
    /// kept (the duplicate window); a declined one is not kept, so a retry goes through.
    pub(super) window: Option<Duration>,
    pub(super) ttl: Duration,
    /// For payments: what tells their transaction apart, should the outcome be unknown.
    pub(super) probe: Option<Probe>,
}

/// How a forwarded request ended.
pub(crate) enum Settled {
    /// Nothing was sent upstream.
    NotSent,
    /// Sent (at `sent_at_ms`, Unix time) as `request_id`, but no answer came: it may
    /// still complete upstream.
    Unknown { sent_at_ms: u64, request_id: String },
    /// The upstream answered.
    Answered {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        outcome: Outcome,
        request_id: String,
    },
}

impl Ticket {
    /// Records the outcome: the answer is kept for the key (and, for a successful payment
    /// without a key, for the duplicate window); an unknown outcome keeps the key claimed,
    /// so a retry cannot charge again; nothing sent frees the key. Then frees the order.
    pub(crate) async fn finish(mut self, settled: Settled) {
        let (settle, keep) = self.settlement(settled);
        let swaps = self.settle_claims(settle, keep);
        if let (Some(shared), false) = (&self.shared, swaps.is_empty()) {
            let _ = shared.settle(&swaps).await;
        }
    }

    /// What the key becomes, and for how long. The answer is copied and scrubbed for
    /// keeping only when it will be kept: not for a payment that holds no key (duplicate
    /// window off) nor for a declined one inside the window.
    fn settlement(&mut self, settled: Settled) -> (Settle, Duration) {
        let probe = self.probe.take();
        match settled {
            Settled::NotSent => (Settle::Release, self.ttl),
            Settled::Unknown {
                sent_at_ms,
                request_id,
            } => {
                let unknown = UnknownOutcome {
                    sent_at_ms,
                    request_id,
                    probe,
                };
                (Settle::Unknown(Arc::new(unknown)), self.ttl)
            }
            Settled::Answered {
                status,
                content_type,
                body,
                outcome,
                request_id,
            } => {
                let keep = match self.window {
                    Some(window) if outcome == Outcome::Approved => window,
                    Some(_) => return (Settle::Release, self.ttl),
                    None => self.ttl,
                };
                if self.key.is_none() {
                    return (Settle::Release, keep);
                }
                let answer =
                    StoredAnswer::storable(status, content_type, body, outcome, request_id);
                (Settle::Done(Arc::new(answer)), keep)
            }
        }
    }

    /// Takes the ticket's claims: settles a local key here and returns what settles the
    /// shared ones (the key first, then the order, in one script). A local order is freed
    /// as its guard drops, after the key.
    fn settle_claims(&mut self, settle: Settle, keep: Duration) -> Vec<Swap> {
        let mut swaps = Vec::with_capacity(2);
        match self.key.take() {
            Some(HeldKey::Local { key, claim }) => {
                self.local
                    .settle(&key, claim, settle, Instant::now() + keep);
            }
            Some(HeldKey::Shared { key, value }) => swaps.push(Swap {
                name: key_name(&key),
                held: value,
                value: self.shared_entry(&settle),
                ttl: keep,
            }),
            None => {}
        }
        if let Some(HeldOrder::Shared { order, token }) = self.order.take() {
            swaps.push(Swap::release(order_name(&order), token));
        }
        swaps
    }

    /// What a shared key holds once settled (`""`: nothing, it is deleted).
    fn shared_entry(&self, settle: &Settle) -> String {
        match settle {
            Settle::Release => String::new(),
            Settle::Unknown(unknown) => codec::unknown(&self.fingerprint, unknown),
            Settle::Done(answer) => codec::done(&self.fingerprint, answer),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let swaps = self.settle_claims(Settle::Release, Duration::ZERO);
        // Shared claims are released by a task of their own: Drop cannot wait.
        let (Some(shared), Ok(runtime)) =
            (self.shared.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        if !swaps.is_empty() {
            runtime.spawn(async move {
                let _ = shared.settle(&swaps).await;
            });
        }
    }
}
