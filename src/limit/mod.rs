//! Rate limits and card-testing defences (see README.md, Architecture).
//!
//! [`Limiter`] enforces GCRA quotas per client, per IP, per order and per card
//! fingerprint, the distinct-attempts cap per card (card cracking) and the per-client
//! decline breaker. One `Limiter` is shared by all requests.
//!
//! - Local mode (no `limits.redis_url`): governor keyed limiters and our own attempt sets,
//!   memory bounded by periodic pruning and a hard cap of `max_keys` keys per kind (see
//!   `local.rs` for what happens at the cap and why).
//! - Shared mode: the checks of a request stage are one atomic Lua script in Redis
//!   (`redis.rs`): the client check before the body, the order and card checks after it.
//!   While Redis is unreachable, `on_store_error = "deny"` refuses with
//!   [`LimitError::StoreUnavailable`] (the caller answers 503) and `"local"` applies the
//!   local limits of this replica instead (their state starts empty at the first outage).
//!   Logged once per outage; recovery is automatic.
//! - The decline breaker is always local to the replica, fed by the upstream answers it
//!   saw (`breaker.rs` explains why that is enough).
//!
//! IP keys: an IPv4 address as is (IPv4-mapped IPv6 counts as IPv4), an IPv6 address by
//! its /64 prefix, the unit one subscriber gets; otherwise one host could rotate through
//! 2^64 addresses, escaping the quota and filling the map.

mod breaker;
mod build;
mod emission;
mod error;
mod hash;
mod keys;
mod kind;
mod local;
mod log_every;
mod prunable;
mod prune;
mod redis;
mod scope;

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{LimitsConfig, OnStoreError};
use crate::swap::Swap;

use self::build::Fixed;
use self::error::exceeded;
use self::keys::{HexKey, ip_key, redis_key};
use self::kind::{Inner, Kind, local_check};
use self::redis::{Check, RedisStore};

pub use self::error::LimitError;
pub use self::scope::Scope;

/// Dispatches every limit check to Redis or the local state; `Send + Sync`, shared by all
/// requests.
pub struct Limiter {
    /// Replaced whole by a reload ([`Limiter::reconfigure`]); a check keeps the one it
    /// started with.
    state: Swap<Inner>,
    fixed: Fixed,
    /// The Redis probe.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The pruning of the current state's local maps.
    prune: Mutex<tokio::task::JoinHandle<()>>,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.prune
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort();
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("shared", &self.inner().redis.is_some())
            .field("local_keys", &self.local_keys())
            .finish()
    }
}

impl Limiter {
    /// Must be called inside a tokio runtime: spawns the pruning task and, with
    /// `redis_url`, the Redis probe task. Never blocks and never fails when Redis is down:
    /// it is connected in the background (until then the store counts as unavailable, see
    /// [`Limiter::readiness_problem`]).
    pub fn start(config: &LimitsConfig) -> Limiter {
        let shared = config.redis_url.is_some();
        let fixed = Fixed {
            with_local: !shared || config.on_store_error == OnStoreError::Local,
            max_keys: config.max_keys,
        };
        let mut tasks = Vec::new();
        let redis = config.redis_url.as_deref().map(|url| {
            let fallback = match config.on_store_error {
                OnStoreError::Deny => "payments refused (503)",
                OnStoreError::Local => "local limits of this replica",
            };
            let (store, task) = RedisStore::start(url, config.redis_timeout, fallback);
            tasks.push(task);
            Arc::new(store)
        });
        let inner = Arc::new(build::inner(config, fixed, redis, None));
        let prune = tokio::spawn(prune::prune_loop(Arc::downgrade(&inner)));
        Limiter {
            state: Swap::from_arc(inner),
            fixed,
            tasks,
            prune: Mutex::new(prune),
        }
    }

    /// Applies reloaded quotas and breaker settings; every kind whose quota did not
    /// change keeps its counters. The Redis settings, `max_keys` and `on_store_error`
    /// are not live (a reload that changes them is refused before this).
    pub fn reconfigure(&self, config: &LimitsConfig) {
        let old = self.inner();
        let inner = Arc::new(build::inner(
            config,
            self.fixed,
            old.redis.clone(),
            Some(&old),
        ));
        let prune = tokio::spawn(prune::prune_loop(Arc::downgrade(&inner)));
        self.state.store(inner);
        let previous = std::mem::replace(
            &mut *self.prune.lock().unwrap_or_else(PoisonError::into_inner),
            prune,
        );
        previous.abort();
    }

    /// The state current now; a check keeps it to its end.
    fn inner(&self) -> Arc<Inner> {
        self.state.load()
    }

    /// The decline breaker for this client, then the per-client quota.
    pub async fn check_client(&self, client_id: &str) -> Result<(), LimitError> {
        if let Err(retry_after) = self.inner().breaker.check(client_id) {
            return Err(LimitError::Exceeded {
                scope: Scope::Breaker,
                retry_after,
            });
        }
        let inner = self.inner();
        let Some(kind) = &inner.per_client else {
            return Ok(());
        };
        let key = || redis_key(Scope::Client, client_id);
        self.check_kind(kind, key, || client_id.to_owned()).await
    }

    /// The per-IP quota (IPv6 by /64 prefix).
    pub async fn check_ip(&self, ip: IpAddr) -> Result<(), LimitError> {
        let inner = self.inner();
        let Some(kind) = &inner.per_ip else {
            return Ok(());
        };
        let ip = ip_key(ip);
        let key = || redis_key(Scope::Ip, &ip);
        self.check_kind(kind, key, || ip).await
    }

    /// The per-order quota. Keyed by the UUID's value, so upper- and lower-case spellings
    /// of one order share a quota (and the local key costs no allocation).
    pub async fn check_order(&self, order: uuid::Uuid) -> Result<(), LimitError> {
        self.check_payment(Some(order), None).await
    }

    /// `card` = keyed card fingerprint (never the PAN); `attempt` = keyed fingerprint of
    /// (PAN, expiry, CVV). A new attempt value beyond `card_attempts.count` distinct values
    /// within `card_attempts.period` is refused; an already-seen value does not count
    /// again. Then the per-card quota.
    pub async fn check_card(&self, card: &[u8; 32], attempt: &[u8; 32]) -> Result<(), LimitError> {
        self.check_payment(None, Some((card, attempt))).await
    }

    /// A validated payment's checks, in order: the order, the card's distinct attempts, the
    /// card. In shared mode they are one Redis script (one round trip, not three); a
    /// refusal stops the later checks, as it does locally.
    pub async fn check_payment(
        &self,
        order: Option<uuid::Uuid>,
        card: Option<(&[u8; 32], &[u8; 32])>,
    ) -> Result<(), LimitError> {
        let inner = self.inner();
        if let Some(store) = &inner.redis {
            let (checks, scopes) = Self::shared_payment_checks(&inner, order, card);
            if checks.is_empty() {
                return Ok(());
            }
            if let Ok(verdict) = store.run(&checks).await {
                return verdict.map_or(Ok(()), |(n, wait)| Err(exceeded(scopes[n], wait)));
            }
        }
        Self::local_payment_checks(&inner, order, card)
    }

    /// The Redis checks of [`Limiter::check_payment`] and the scope of each, in order.
    fn shared_payment_checks<'a>(
        i: &'a Inner,
        order: Option<uuid::Uuid>,
        card: Option<(&'a [u8; 32], &'a [u8; 32])>,
    ) -> (Vec<Check<'a>>, Vec<Scope>) {
        let mut checks = Vec::with_capacity(3);
        let mut scopes = Vec::with_capacity(3);
        if let (Some(order), Some(kind)) = (order, &i.per_order) {
            let key = redis_key(Scope::Order, &order.hyphenated());
            checks.push(Check::Gcra {
                key,
                quota: &kind.quota,
            });
            scopes.push(Scope::Order);
        }
        if let (Some((card, attempt)), Some(attempts)) = (card, &i.card_attempts) {
            let key = redis_key(Scope::CardAttempts, &HexKey(card));
            let quota = &attempts.quota;
            checks.push(Check::Attempts {
                key,
                attempt,
                quota,
            });
            scopes.push(Scope::CardAttempts);
        }
        if let (Some((card, _)), Some(kind)) = (card, &i.per_card) {
            let key = redis_key(Scope::Card, &HexKey(card));
            checks.push(Check::Gcra {
                key,
                quota: &kind.quota,
            });
            scopes.push(Scope::Card);
        }
        (checks, scopes)
    }

    /// [`Limiter::check_payment`] on this replica's state (local mode, or the fallback of
    /// shared mode).
    fn local_payment_checks(
        i: &Inner,
        order: Option<uuid::Uuid>,
        card: Option<(&[u8; 32], &[u8; 32])>,
    ) -> Result<(), LimitError> {
        if let (Some(order), Some(kind)) = (order, &i.per_order) {
            local_check(kind, &order.as_u128())?;
        }
        let Some((card, attempt)) = card else {
            return Ok(());
        };
        if let Some(attempts) = &i.card_attempts {
            let local = attempts
                .local
                .as_ref()
                .ok_or(LimitError::StoreUnavailable)?;
            local
                .check(card, attempt)
                .map_err(|wait| exceeded(Scope::CardAttempts, wait))?;
        }
        if let Some(kind) = &i.per_card {
            local_check(kind, &hash::card_key(card))?;
        }
        Ok(())
    }

    /// Feeds the per-client decline breaker after an upstream answer (`declined`: the
    /// upstream refused the payment). Once `decline_window` outcomes are known and the share
    /// of declines among the last `decline_window` is at least `decline_ratio` (and not
    /// zero), the client is refused (`Scope::Breaker`) for `decline_cooldown`; logged at
    /// warn once per trip. Outcomes arriving during the cool-down are ignored and the window
    /// starts afresh after it. Returns true when this outcome tripped the breaker (for the
    /// audit log).
    pub fn record_outcome(&self, client_id: &str, declined: bool) -> bool {
        self.inner().breaker.record(client_id, declined)
    }

    /// For /readyz: `None` when fine, `Some(reason)` when Redis is configured but
    /// unreachable (also before the first connection succeeded).
    pub fn readiness_problem(&self) -> Option<&'static str> {
        match &self.inner().redis {
            Some(store) if !store.is_up() => Some("rate-limit store (Redis) unreachable"),
            _ => None,
        }
    }

    /// For tests and metrics: keys currently held in the local maps, all kinds together
    /// (each kind holds at most `max_keys`).
    pub fn local_keys(&self) -> usize {
        let i = self.inner();
        let kinds = [
            i.per_client
                .as_ref()
                .and_then(|k| k.local.as_ref().map(|l| l.len())),
            i.per_ip
                .as_ref()
                .and_then(|k| k.local.as_ref().map(|l| l.len())),
            i.per_order
                .as_ref()
                .and_then(|k| k.local.as_ref().map(|l| l.len())),
            i.per_card
                .as_ref()
                .and_then(|k| k.local.as_ref().map(|l| l.len())),
            i.card_attempts
                .as_ref()
                .and_then(|a| a.local.as_ref().map(|l| l.len())),
        ];
        kinds.into_iter().flatten().sum::<usize>() + i.breaker.len()
    }

    /// Redis when configured and up; otherwise the local state (shared mode with
    /// `on_store_error = "local"`), or `StoreUnavailable`.
    async fn check_kind<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone>(
        &self,
        kind: &Kind<K, S>,
        redis_key: impl FnOnce() -> String,
        local_key: impl FnOnce() -> K,
    ) -> Result<(), LimitError> {
        if let Some(store) = &self.inner().redis {
            let check = Check::Gcra {
                key: redis_key(),
                quota: &kind.quota,
            };
            if let Ok(verdict) = store.run(std::slice::from_ref(&check)).await {
                return verdict.map_or(Ok(()), |(_, wait)| Err(exceeded(kind.scope, wait)));
            }
        }
        local_check(kind, &local_key())
    }
}

#[cfg(test)]
mod tests;
