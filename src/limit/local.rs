//! In-process limit state: governor keyed GCRA limiters (one per key kind) and the
//! card-attempts sets, both with bounded memory.
//!
//! Memory is bounded twice over:
//! - a background task (`super::prune`) drops idle state as the maps grow, and at least
//!   every few seconds (a key whose GCRA state equals a fresh one carries no information);
//! - a hard cap of `max_keys` keys per kind, enforced on the request path. What happens at
//!   the cap is the safe choice for each structure:
//!   * governor limiters: prune first; if the map is still full, the kind's limiter is
//!     **reset** (replaced by an empty one, logged at warn). Refusing new keys instead would
//!     let an attacker who rotates cards/IPs/orders block every honest newcomer, and letting
//!     new keys through untracked would stop limiting the very keys being abused. A reset
//!     forgets some state, but the attacker has to push `max_keys` distinct keys through the
//!     earlier (client, IP) quotas to cause one, and memory can never grow.
//!     (governor exposes neither key lookup nor per-key eviction, so "evict the oldest"
//!     is not available for these maps.)
//!   * card attempts (our own map): prune expired entries; if the shard is still full, the
//!     quarter of its cards that were used least recently are evicted (logged at warn), so
//!     the cards under active attack keep their history.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use governor::DefaultKeyedRateLimiter;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use smallvec::SmallVec;

use super::emission::emission_interval;
use super::hash::{FingerprintHash, card_key};
use super::log_every::LogEvery;
use super::prunable::Prunable;
use super::scope::Scope;
use crate::config::Quota;

/// The governor quota for `q`: one cell every `period / count`, `burst` at once.
pub(super) fn governor_quota(q: &Quota) -> governor::Quota {
    governor::Quota::with_period(emission_interval(q))
        .expect("emission interval is at least 1ns")
        .allow_burst(NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN))
}

/// governor's keyed limiter on its default clock, with hasher `S` for its map.
type Keyed<K, S> = DefaultKeyedRateLimiter<K, NoOpMiddleware<<DefaultClock as Clock>::Instant>, S>;

/// One governor keyed limiter with a hard key cap. `S` hashes the keys: the std hasher
/// for keys a client chooses, [`FingerprintHash`] for card fingerprints.
pub(super) struct KeyedQuota<K: Hash + Eq + Clone, S: BuildHasher + Clone = RandomState> {
    scope: Scope,
    quota: governor::Quota,
    /// Read-locked by every check (shared, uncontended between keys: governor's map is
    /// itself sharded); write-locked only to reset the kind at the cap.
    limiter: RwLock<Keyed<K, S>>,
    max_keys: usize,
    /// The map's size is looked at every `sample_every` checks (governor's `len()` walks
    /// every shard, too dear for each request)...
    sample_every: u32,
    /// ...and acted on from `threshold = max_keys - sample_every`, so that at most
    /// `sample_every` new keys between two looks still leave it at or below `max_keys`.
    threshold: usize,
    checks: AtomicU32,
    maintaining: AtomicBool,
    resets: AtomicU64,
    log: LogEvery,
}

/// A fresh, empty limiter for `quota`.
fn keyed<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone>(
    quota: governor::Quota,
) -> Keyed<K, S> {
    governor::RateLimiter::dashmap_with_clock_and_hasher(
        quota,
        DefaultClock::default(),
        S::default(),
    )
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone> KeyedQuota<K, S> {
    pub(super) fn new(scope: Scope, quota: &Quota, max_keys: usize) -> Self {
        let quota = governor_quota(quota);
        let max_keys = max_keys.max(1);
        let sample_every = u32::try_from((max_keys / 64).clamp(1, 64)).unwrap_or(64);
        KeyedQuota {
            scope,
            quota,
            limiter: RwLock::new(keyed(quota)),
            max_keys,
            sample_every,
            threshold: max_keys.saturating_sub(sample_every as usize).max(1),
            checks: AtomicU32::new(0),
            maintaining: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            log: LogEvery::new(Duration::from_secs(60)),
        }
    }

    /// `Err(retry_after)` when `key` is over its quota.
    pub(super) fn check(&self, key: &K) -> Result<(), Duration> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.sample_every)
        {
            self.enforce_cap();
        }
        let limiter = self.limiter.read().unwrap_or_else(PoisonError::into_inner);
        match limiter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until
                .wait_time_from(limiter.clock().now())
                .max(Duration::from_millis(1))),
        }
    }

    fn enforce_cap(&self) {
        if self.len() < self.threshold || self.maintaining.swap(true, Ordering::Acquire) {
            return;
        }
        let limiter = self.limiter.read().unwrap_or_else(PoisonError::into_inner);
        limiter.retain_recent();
        let still = limiter.len();
        drop(limiter);
        if still >= self.threshold {
            let fresh = keyed(self.quota);
            let old = std::mem::replace(
                &mut *self.limiter.write().unwrap_or_else(PoisonError::into_inner),
                fresh,
            );
            // The old map is freed outside the lock.
            drop(old);
            let resets = self.resets.fetch_add(1, Ordering::Relaxed) + 1;
            if self.log.ready() {
                tracing::warn!(
                    scope = self.scope.as_str(),
                    max_keys = self.max_keys,
                    resets,
                    "rate-limit key cap reached with every key still active; \
                     this kind's local state was reset to bound memory"
                );
            }
        }
        self.maintaining.store(false, Ordering::Release);
    }

    pub(super) fn len(&self) -> usize {
        self.limiter
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    #[cfg(test)]
    pub(super) fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
}

/// Per card: its attempts seen in the window (at most `count`), and when the card was last
/// checked.
///
/// Kept to one 64-byte map entry: every payment brings a card the map has not seen, and the
/// insert's cache misses were the larger part of the limits' cost. So the card key and the
/// attempt ids are truncated fingerprints (16 and 8 bytes of HMAC output: a collision would
/// need the audit key to aim, and at worst merges two attempts of one card), times are
/// nanoseconds since the map's epoch, and the first attempt is stored inline (nearly every
/// card is tried once, so no allocation per new card).
struct Seen {
    /// (attempt id, first seen at)
    attempts: SmallVec<[(u64, u64); 1]>,
    touched: u64,
}

const ATTEMPT_SHARDS: usize = 16;

/// Card key (see [`Seen`]) -> its attempts.
type AttemptMap = HashMap<u128, Seen, FingerprintHash>;

/// Distinct (expiry, CVV) combinations per card in a sliding window (card cracking).
pub(super) struct CardAttempts {
    count: usize,
    /// The window, in nanoseconds.
    period: u64,
    /// Zero of the nanosecond times in [`Seen`].
    epoch: Instant,
    shards: Box<[Mutex<AttemptMap>]>,
    shard_cap: usize,
    log: LogEvery,
}

impl CardAttempts {
    pub(super) fn new(quota: &Quota, max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let n = max_keys.min(ATTEMPT_SHARDS);
        CardAttempts {
            count: quota.count.max(1) as usize,
            period: u64::try_from(quota.period.as_nanos()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            shards: (0..n)
                .map(|_| Mutex::new(HashMap::with_hasher(FingerprintHash)))
                .collect(),
            shard_cap: max_keys / n,
            log: LogEvery::new(Duration::from_secs(60)),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, card: &[u8; 32]) -> MutexGuard<'_, AttemptMap> {
        // Fingerprints are keyed hashes: any bits spread evenly and cannot be steered. The
        // shard comes from byte 3 of the 8-byte words, i.e. bits 24-31 of the table's
        // FingerprintHash, which neither its bucket index (low bits, below 16 M buckets)
        // nor its control tag (top 7 bits) uses: every shard spreads over all its buckets.
        let mix = u16::from_le_bytes([card[3] ^ card[11], card[19] ^ card[27]]);
        self.shards[usize::from(mix) % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(retry_after)` when `attempt` is new and the card already has `count` distinct
    /// attempts in the window. A refused attempt is not recorded.
    pub(super) fn check(&self, card: &[u8; 32], attempt: &[u8; 32]) -> Result<(), Duration> {
        let key = card_key(card);
        let id = u64::from_le_bytes(attempt[..8].try_into().expect("8 bytes"));
        let now = self.now();
        let period = self.period;
        let mut map = self.shard(card);
        if map.len() >= self.shard_cap && !map.contains_key(&key) {
            self.make_room(&mut map, now);
        }
        let seen = map.entry(key).or_insert_with(|| Seen {
            attempts: SmallVec::new(),
            touched: now,
        });
        // Refused checks count as use too: a card under attack keeps its history.
        seen.touched = now;
        let attempts = &mut seen.attempts;
        // Saturating: `now` was read before the lock, a concurrent check may have stored
        // a later time.
        attempts.retain(|(_, first)| now.saturating_sub(*first) < period);
        if attempts.iter().any(|(a, _)| *a == id) {
            return Ok(());
        }
        if attempts.len() >= self.count {
            let oldest = attempts.iter().map(|(_, t)| *t).min().unwrap_or(now);
            let retry = Duration::from_nanos(oldest.saturating_add(period).saturating_sub(now));
            return Err(retry.max(Duration::from_millis(1)));
        }
        attempts.push((id, now));
        Ok(())
    }

    /// Prunes expired state in a full shard; if it is still full, evicts the least
    /// recently used quarter of its cards.
    fn make_room(&self, map: &mut AttemptMap, now: u64) {
        prune_map(map, now, self.period);
        if map.len() < self.shard_cap {
            return;
        }
        let mut touched: Vec<u64> = map.values().map(|s| s.touched).collect();
        let k = touched.len() / 4;
        let (_, cutoff, _) = touched.select_nth_unstable(k);
        let cutoff = *cutoff;
        map.retain(|_, s| s.touched > cutoff);
        if self.log.ready() {
            tracing::warn!(
                scope = Scope::CardAttempts.as_str(),
                max_keys = self.shard_cap * self.shards.len(),
                "card-attempts key cap reached with every card still active; \
                 the least recently used cards were forgotten to bound memory"
            );
        }
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Default + Clone> Prunable for KeyedQuota<K, S> {
    fn len(&self) -> usize {
        KeyedQuota::len(self)
    }

    fn prune(&self, shrink: bool) {
        let limiter = self.limiter.read().unwrap_or_else(PoisonError::into_inner);
        limiter.retain_recent();
        if shrink {
            limiter.shrink_to_fit();
        }
    }
}

impl Prunable for CardAttempts {
    fn len(&self) -> usize {
        CardAttempts::len(self)
    }

    /// Drops expired attempts and cards without any.
    fn prune(&self, shrink: bool) {
        let now = self.now();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            prune_map(&mut map, now, self.period);
            if shrink {
                map.shrink_to_fit();
            }
        }
    }
}

fn prune_map(map: &mut AttemptMap, now: u64, period: u64) {
    map.retain(|_, seen| {
        seen.attempts
            .retain(|(_, first)| now.saturating_sub(*first) < period);
        !seen.attempts.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::hash::fp;

    fn q(count: u32, period: Duration, burst: u32) -> Quota {
        Quota {
            count,
            period,
            burst,
        }
    }

    #[test]
    fn governor_quota_matches_config() {
        let g = governor_quota(&q(5, Duration::from_secs(600), 5));
        assert_eq!(g.replenish_interval(), Duration::from_secs(120));
        assert_eq!(g.burst_size().get(), 5);
        // A count so large that period / count rounds to zero still gives a valid quota.
        let g = governor_quota(&q(u32::MAX, Duration::from_nanos(1), 1));
        assert_eq!(g.replenish_interval(), Duration::from_nanos(1));
    }

    #[test]
    fn keyed_cap_resets_when_every_key_is_active() {
        let k: KeyedQuota<u32> =
            KeyedQuota::new(Scope::Ip, &q(1, Duration::from_secs(3600), 1), 1000);
        for i in 0..10_000 {
            let _ = k.check(&i);
            assert!(k.len() <= 1000, "len {} after {i}", k.len());
        }
        assert!(k.resets() >= 9, "resets {}", k.resets());
    }

    #[test]
    fn keyed_cap_prunes_idle_keys_before_resetting() {
        // 1000/s: a key's state is idle again 1 ms after its single use.
        let k: KeyedQuota<u32> =
            KeyedQuota::new(Scope::Ip, &q(1000, Duration::from_secs(1), 1), 100);
        for i in 0..1000 {
            let _ = k.check(&i);
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert!(k.len() <= 100);
        assert!(
            k.resets() < 10,
            "idle keys should mostly be pruned, resets {}",
            k.resets()
        );
    }

    #[test]
    fn attempts_cap_evicts_least_recently_used() {
        let a = CardAttempts::new(&q(3, Duration::from_secs(3600), 3), 160);
        let target = fp(u32::MAX);
        for i in 0..3 {
            a.check(&target, &fp(i)).unwrap();
        }
        for i in 0..2000 {
            a.check(&fp(i), &fp(i)).unwrap();
            // The card under attack is used all along and keeps its history.
            if i % 10 == 0 {
                assert!(a.check(&target, &fp(99)).is_err());
            }
            assert!(a.len() <= 160, "len {} after {i}", a.len());
        }
    }

    #[test]
    fn an_attempt_map_entry_fits_a_cache_line() {
        assert!(std::mem::size_of::<(u128, Seen)>() <= 64);
    }

    #[test]
    fn cards_spread_over_the_attempt_shards() {
        let a = CardAttempts::new(&q(3, Duration::from_secs(3600), 3), 1_000_000);
        for i in 0..16_000 {
            a.check(&fp(i), &fp(!i)).unwrap();
        }
        // 1,000 per shard expected; a skewed shard choice would leave some nearly empty.
        for shard in a.shards.iter() {
            let n = shard.lock().unwrap().len();
            assert!(
                (700..1300).contains(&n),
                "a shard holds {n} of 16,000 cards"
            );
        }
    }

    #[test]
    fn attempts_expire_after_the_period() {
        let a = CardAttempts::new(&q(1, Duration::from_millis(50), 1), 10);
        let card = fp(1);
        a.check(&card, &fp(1)).unwrap();
        let retry = a.check(&card, &fp(2)).unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        a.check(&card, &fp(2)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        a.prune(true);
        assert_eq!(a.len(), 0);
    }
}
