//! The state behind each limit kind: its quota and, in local mode or as the fallback of
//! shared mode, this replica's keyed state; and the check against that local state.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Quota;

use super::breaker::Breaker;
use super::error::{LimitError, exceeded};
use super::hash::FingerprintHash;
use super::local::{CardAttempts, KeyedQuota};
use super::prunable::{LocalMaps, Prunable};
use super::redis::RedisStore;
use super::scope::Scope;

/// One quota kind: its quota and, in local mode or as the fallback of shared mode, its
/// local state.
pub(super) struct Kind<K: Hash + Eq + Clone, S: BuildHasher + Clone = RandomState> {
    pub(super) scope: Scope,
    pub(super) quota: Quota,
    pub(super) local: Option<KeyedQuota<K, S>>,
}

/// The distinct-attempts cap per card: its quota and, like [`Kind`], its local state.
pub(super) struct Attempts {
    pub(super) quota: Quota,
    pub(super) local: Option<CardAttempts>,
}

/// Everything a `Limiter` shares with its background tasks (pruning, the Redis probe).
/// Each part is behind an `Arc` so that a reload can carry it over (see `build.rs`).
pub(super) struct Inner {
    pub(super) per_client: Option<Arc<Kind<String>>>,
    pub(super) per_ip: Option<Arc<Kind<IpAddr>>>,
    pub(super) per_order: Option<Arc<Kind<u128>>>,
    pub(super) per_card: Option<Arc<Kind<u128, FingerprintHash>>>,
    pub(super) card_attempts: Option<Arc<Attempts>>,
    pub(super) breaker: Arc<Breaker>,
    /// The breaker's settings (ratio, window, cool-down), to tell whether a reload
    /// changed them.
    pub(super) decline: (f64, u32, Duration),
    pub(super) redis: Option<Arc<RedisStore>>,
}

impl LocalMaps for Inner {
    fn local_maps(&self) -> Vec<&dyn Prunable> {
        fn local<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone>(
            kind: &Option<Arc<Kind<K, S>>>,
        ) -> Option<&dyn Prunable>
        where
            KeyedQuota<K, S>: Prunable,
        {
            kind.as_ref()?.local.as_ref().map(|l| l as &dyn Prunable)
        }
        let attempts = self.card_attempts.as_ref().and_then(|a| a.local.as_ref());
        [
            local(&self.per_client),
            local(&self.per_ip),
            local(&self.per_order),
            local(&self.per_card),
            attempts.map(|a| a as &dyn Prunable),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The local state of `kind` (local mode, or the fallback of shared mode), or
/// `StoreUnavailable` when shared mode fails closed.
pub(super) fn local_check<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone>(
    kind: &Kind<K, S>,
    key: &K,
) -> Result<(), LimitError> {
    match &kind.local {
        Some(local) => local.check(key).map_err(|wait| exceeded(kind.scope, wait)),
        None => Err(LimitError::StoreUnavailable),
    }
}
