//! The local store of claimed keys and stored answers: bounded, expiring, sharded.
//!
//! A claim is one map lookup and insert under one shard's lock; the keys are keyed hashes,
//! so their first byte picks the shard evenly. Memory is bounded by `idempotency.max_keys`:
//! a full shard first drops its expired entries; if it is still full, it forgets the
//! completed answers closest to expiry (an eighth of the shard at once, so the cost is
//! spread over the inserts that follow). Keys in flight or with an unknown outcome are
//! never dropped early; when they alone fill the shard, a new key is refused (503,
//! nothing forwarded).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Digest;
use super::answer::StoredAnswer;
use super::resolve::UnknownOutcome;

const SHARDS: usize = 16;

/// What a stored key stands for.
enum State {
    /// Claimed by a request still running; `claim` tells its holder apart.
    InFlight { claim: u64 },
    /// Forwarded, but the answer never came: it may still have been charged.
    Unknown(Arc<UnknownOutcome>),
    /// Completed; replayed to the same request.
    Done(Arc<StoredAnswer>),
}

struct Entry {
    fingerprint: Digest,
    state: State,
    /// `None` while in flight: a claim lasts as long as its request.
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// What a claim found.
pub(crate) enum Lookup {
    /// First use: claimed under this id.
    Claimed(u64),
    /// The same request is in flight.
    InFlight,
    /// The same request was forwarded and its outcome is unknown.
    Unknown(Arc<UnknownOutcome>),
    /// The key was used for another request.
    Mismatch,
    /// The same request completed: its answer.
    Done(Arc<StoredAnswer>),
    /// No room for another key.
    Full,
}

/// How a claim ends.
pub(crate) enum Settle {
    /// Nothing was forwarded (or the answer cannot be kept): the key is free again.
    Release,
    Unknown(Arc<UnknownOutcome>),
    Done(Arc<StoredAnswer>),
}

pub(crate) struct LocalStore {
    shards: Box<[Mutex<HashMap<Digest, Entry>>]>,
    per_shard: usize,
    next_claim: AtomicU64,
}

impl LocalStore {
    pub(crate) fn new(max_keys: usize) -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            next_claim: AtomicU64::new(1),
        }
    }

    fn shard(&self, key: &Digest) -> MutexGuard<'_, HashMap<Digest, Entry>> {
        // A panic while holding the lock leaves a consistent map (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.shards[key[0] as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` for the request with `fingerprint`, or says why not.
    pub(crate) fn claim(&self, key: &Digest, fingerprint: &Digest, now: Instant) -> Lookup {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get(key).filter(|e| e.live(now)) {
            if entry.fingerprint != *fingerprint {
                return Lookup::Mismatch;
            }
            return match &entry.state {
                State::InFlight { .. } => Lookup::InFlight,
                State::Unknown(unknown) => Lookup::Unknown(unknown.clone()),
                State::Done(answer) => Lookup::Done(answer.clone()),
            };
        }
        if !self.make_room(&mut shard, now) {
            return Lookup::Full;
        }
        let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            fingerprint: *fingerprint,
            state: State::InFlight { claim },
            expires: None,
        };
        shard.insert(*key, entry);
        Lookup::Claimed(claim)
    }

    /// Ends the claim `claim` on `key`; a claim that is no longer there is left alone.
    pub(crate) fn settle(&self, key: &Digest, claim: u64, settle: Settle, expires: Instant) {
        let mut shard = self.shard(key);
        let Some(entry) = shard.get_mut(key) else {
            return;
        };
        if !matches!(entry.state, State::InFlight { claim: c } if c == claim) {
            return;
        }
        match settle {
            Settle::Release => {
                shard.remove(key);
            }
            Settle::Unknown(unknown) => {
                entry.state = State::Unknown(unknown);
                entry.expires = Some(expires);
            }
            Settle::Done(answer) => {
                entry.state = State::Done(answer);
                entry.expires = Some(expires);
            }
        }
    }

    /// Replaces the unknown outcome `unknown` under `key` (if it is still there) by a new
    /// claim (`None`: the retry takes the key over) or by its resolved answer.
    pub(crate) fn resolve(
        &self,
        key: &Digest,
        unknown: &UnknownOutcome,
        answer: Option<Arc<StoredAnswer>>,
        expires: Instant,
    ) -> Option<u64> {
        let mut shard = self.shard(key);
        let entry = shard.get_mut(key)?;
        if !matches!(&entry.state, State::Unknown(u) if **u == *unknown) {
            return None;
        }
        match answer {
            Some(answer) => {
                entry.state = State::Done(answer);
                entry.expires = Some(expires);
                Some(0)
            }
            None => {
                let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
                entry.state = State::InFlight { claim };
                entry.expires = None;
                Some(claim)
            }
        }
    }

    /// Whether the shard has room for one more key, after dropping its expired ones and,
    /// if need be, the completed answers closest to expiry.
    fn make_room(&self, shard: &mut HashMap<Digest, Entry>, now: Instant) -> bool {
        if shard.len() < self.per_shard {
            return true;
        }
        shard.retain(|_, e| e.live(now));
        if shard.len() < self.per_shard {
            return true;
        }
        let mut done: Vec<Instant> = shard
            .values()
            .filter(|e| matches!(e.state, State::Done(_)))
            .filter_map(|e| e.expires)
            .collect();
        if done.is_empty() {
            return false;
        }
        let nth = (self.per_shard / 8).min(done.len() - 1);
        let (_, cutoff, _) = done.select_nth_unstable(nth);
        let cutoff = *cutoff;
        tracing::warn!(
            "idempotency store full: answers kept shorter than idempotency.ttl \
             (raise idempotency.max_keys)"
        );
        shard.retain(|_, e| !matches!(e.state, State::Done(_)) || e.expires > Some(cutoff));
        shard.len() < self.per_shard
    }

    /// Drops every expired entry (called periodically, so memory follows the traffic).
    pub(crate) fn prune(&self, now: Instant) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, e| e.live(now));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::StatusCode;

    use super::*;
    use crate::outcome::Outcome;

    fn answer() -> Arc<StoredAnswer> {
        Arc::new(StoredAnswer {
            status: StatusCode::CREATED,
            content_type: None,
            body: Bytes::from_static(b"{}"),
            outcome: Outcome::Approved,
            request_id: "r1".into(),
        })
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn claim_then_in_flight_then_replay_or_mismatch() {
        let s = LocalStore::new(100);
        let now = Instant::now();
        let (k, f, g) = ([1; 32], [2; 32], [3; 32]);
        let Lookup::Claimed(c) = s.claim(&k, &f, now) else {
            panic!("not claimed")
        };
        assert!(matches!(s.claim(&k, &f, now), Lookup::InFlight));
        assert!(matches!(s.claim(&k, &g, now), Lookup::Mismatch));
        s.settle(&k, c, Settle::Done(answer()), now + HOUR);
        assert!(matches!(s.claim(&k, &f, now), Lookup::Done(_)));
        assert!(matches!(s.claim(&k, &g, now), Lookup::Mismatch));
        // Expired: claimed afresh.
        assert!(matches!(
            s.claim(&k, &f, now + 2 * HOUR),
            Lookup::Claimed(_)
        ));
    }

    #[test]
    fn release_frees_the_key_and_unknown_holds_it() {
        let s = LocalStore::new(100);
        let now = Instant::now();
        let Lookup::Claimed(c) = s.claim(&[1; 32], &[2; 32], now) else {
            panic!()
        };
        s.settle(&[1; 32], c, Settle::Release, now);
        let Lookup::Claimed(c) = s.claim(&[1; 32], &[2; 32], now) else {
            panic!()
        };
        let unknown = Arc::new(UnknownOutcome {
            sent_at_ms: 1,
            request_id: "r1".into(),
            probe: None,
        });
        s.settle(&[1; 32], c, Settle::Unknown(unknown.clone()), now + HOUR);
        assert!(matches!(
            s.claim(&[1; 32], &[2; 32], now),
            Lookup::Unknown(_)
        ));
        // A stale claim id does not touch the entry.
        s.settle(&[1; 32], c, Settle::Release, now);
        assert!(matches!(
            s.claim(&[1; 32], &[2; 32], now),
            Lookup::Unknown(_)
        ));
        // Taken over once: a second retry finds it in flight.
        assert!(s.resolve(&[1; 32], &unknown, None, now).is_some());
        assert!(s.resolve(&[1; 32], &unknown, None, now).is_none());
        assert!(matches!(s.claim(&[1; 32], &[2; 32], now), Lookup::InFlight));
    }

    /// Keys with the same first byte share a shard.
    fn in_shard_7(n: u8) -> Digest {
        let mut key = [7; 32];
        key[1] = n;
        key
    }

    #[test]
    fn bounded_by_max_keys_in_flight_keys_are_never_dropped() {
        // One key per shard.
        let s = LocalStore::new(SHARDS);
        let now = Instant::now();
        let Lookup::Claimed(c) = s.claim(&in_shard_7(0), &[0; 32], now) else {
            panic!()
        };
        assert!(matches!(
            s.claim(&in_shard_7(1), &[0; 32], now),
            Lookup::Full
        ));
        let unknown = Arc::new(UnknownOutcome {
            sent_at_ms: 1,
            request_id: "r1".into(),
            probe: None,
        });
        s.settle(&in_shard_7(0), c, Settle::Unknown(unknown), now + HOUR);
        assert!(matches!(
            s.claim(&in_shard_7(1), &[0; 32], now),
            Lookup::Full
        ));
        // Expired: room again.
        assert!(matches!(
            s.claim(&in_shard_7(1), &[0; 32], now + 2 * HOUR),
            Lookup::Claimed(_)
        ));
        assert_eq!(s.len(), 1);
    }

    /// A completed answer under `key`, kept until `expires`.
    fn done(s: &LocalStore, key: &Digest, now: Instant, expires: Instant) {
        let Lookup::Claimed(c) = s.claim(key, &[0; 32], now) else {
            panic!("not claimed")
        };
        s.settle(key, c, Settle::Done(answer()), expires);
    }

    fn is_done(s: &LocalStore, key: &Digest, now: Instant) -> bool {
        matches!(s.claim(key, &[0; 32], now), Lookup::Done(_))
    }

    #[test]
    fn a_full_shard_forgets_the_answers_closest_to_expiry() {
        let s = LocalStore::new(SHARDS * 16);
        let now = Instant::now();
        for n in 0..16u8 {
            let expires = now + HOUR + Duration::from_secs(u64::from(n));
            done(&s, &in_shard_7(n), now, expires);
        }
        let Lookup::Claimed(_) = s.claim(&in_shard_7(100), &[0; 32], now) else {
            panic!()
        };
        assert!(
            !is_done(&s, &in_shard_7(0), now),
            "the soonest to expire went"
        );
        assert!(is_done(&s, &in_shard_7(15), now), "the latest stayed");
        assert!(s.len() <= 17);
    }

    #[test]
    fn answers_expire_and_are_pruned() {
        let s = LocalStore::new(100);
        let now = Instant::now();
        done(&s, &[4; 32], now, now + HOUR);
        assert!(is_done(&s, &[4; 32], now));
        s.prune(now + 2 * HOUR);
        assert_eq!(s.len(), 0);
    }
}
