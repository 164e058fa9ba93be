//! Building the limiter's state from `[limits]`, at start and on a reload.
//!
//! A reload builds a new [`Inner`] but carries over every kind whose quota did not
//! change, with its counters, so that changing one quota does not hand every caller a
//! fresh allowance on the others. The Redis store is carried over as is (its settings are
//! not live), and the decline breaker when its settings did not change.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::config::{LimitsConfig, Quota};

use super::breaker::Breaker;
use super::kind::{Attempts, Inner, Kind};
use super::local::{CardAttempts, KeyedQuota};
use super::redis::RedisStore;
use super::scope::Scope;

/// What stays fixed for the life of the limiter (not live keys).
#[derive(Clone, Copy)]
pub(super) struct Fixed {
    pub(super) with_local: bool,
    pub(super) max_keys: usize,
}

/// The state for `config`, reusing what `old` has for unchanged quotas.
pub(super) fn inner(
    config: &LimitsConfig,
    fixed: Fixed,
    redis: Option<Arc<RedisStore>>,
    old: Option<&Inner>,
) -> Inner {
    let decline = (
        config.decline_ratio,
        config.decline_window,
        config.decline_cooldown,
    );
    let breaker = match old {
        Some(o) if o.decline == decline => o.breaker.clone(),
        _ => Arc::new(Breaker::new(
            config.decline_ratio,
            config.decline_window,
            config.decline_cooldown,
            fixed.max_keys,
        )),
    };
    Inner {
        per_client: kind(
            old.map(|o| &o.per_client),
            Scope::Client,
            &config.per_client,
            fixed,
        ),
        per_ip: kind(old.map(|o| &o.per_ip), Scope::Ip, &config.per_ip, fixed),
        per_order: kind(
            old.map(|o| &o.per_order),
            Scope::Order,
            &config.per_order,
            fixed,
        ),
        per_card: kind(
            old.map(|o| &o.per_card),
            Scope::Card,
            &config.per_card,
            fixed,
        ),
        card_attempts: attempts(old.map(|o| &o.card_attempts), &config.card_attempts, fixed),
        breaker,
        decline,
        redis,
    }
}

fn kind<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone>(
    old: Option<&Option<Arc<Kind<K, S>>>>,
    scope: Scope,
    quota: &Option<Quota>,
    fixed: Fixed,
) -> Option<Arc<Kind<K, S>>> {
    let quota = (*quota)?;
    if let Some(Some(old)) = old
        && old.quota == quota
    {
        return Some(old.clone());
    }
    Some(Arc::new(Kind {
        scope,
        quota,
        local: fixed
            .with_local
            .then(|| KeyedQuota::new(scope, &quota, fixed.max_keys)),
    }))
}

fn attempts(
    old: Option<&Option<Arc<Attempts>>>,
    quota: &Option<Quota>,
    fixed: Fixed,
) -> Option<Arc<Attempts>> {
    let quota = (*quota)?;
    if let Some(Some(old)) = old
        && old.quota == quota
    {
        return Some(old.clone());
    }
    Some(Arc::new(Attempts {
        quota,
        local: fixed
            .with_local
            .then(|| CardAttempts::new(&quota, fixed.max_keys)),
    }))
}
