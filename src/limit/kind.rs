//! The state behind each limit kind: its quota and, in local mode or as the fallback of
//! shared mode, this replica's keyed state; and the check against that local state.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;

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
pub(super) struct Inner {
    pub(super) per_client: Option<Kind<String>>,
    pub(super) per_ip: Option<Kind<IpAddr>>,
    pub(super) per_order: Option<Kind<u128>>,
    pub(super) per_card: Option<Kind<u128, FingerprintHash>>,
    pub(super) card_attempts: Option<Attempts>,
    pub(super) breaker: Breaker,
    pub(super) redis: Option<RedisStore>,
}

impl LocalMaps for Inner {
    fn local_maps(&self) -> Vec<&dyn Prunable> {
        fn local<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone>(
            kind: &Option<Kind<K, S>>,
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
