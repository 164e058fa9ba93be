//! The background task that drops idle local limit state.
//!
//! A key whose GCRA state equals a fresh one (or a card without attempts in the window)
//! carries no information, so it can go. How often to look is a trade-off that depends on
//! the quotas: with short emission intervals most keys are idle again within milliseconds
//! and a map left alone just grows (a big map costs every payment cache misses), while
//! with long ones (`per_card = "5/h"`) nearly every key is still live and each walk is
//! wasted work on the runtime thread. So pruning follows growth: a map is walked once it
//! has grown by [`GROWTH`] keys, or by a quarter of what the last walk kept, whichever is
//! more, and at least every [`AT_LEAST_EVERY`]. The cost per new key stays constant, and
//! maps of idle keys stay small.

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::prunable::{LocalMaps, Prunable};

/// How often the sizes are looked at (a few shard locks per map).
const TICK: Duration = Duration::from_millis(20);
/// New keys since the last walk that make a map due. Small, so that maps of idle keys stay
/// small (~1.4k keys at 17k payments/s, against ~5k with 4096): every payment inserts a new
/// order and card, and a smaller table means fewer cache misses. The walks cost the same
/// in total. (The benchmark's noise hides the difference: limits cost -3.1 % and -0.6 %
/// medians of 10 rounds before and after, -5.4 % in a second series after.)
const GROWTH: usize = 1024;
/// A map is walked at least this often, grown or not.
const AT_LEAST_EVERY: Duration = Duration::from_secs(2);
/// Freed table memory is returned (`shrink_to_fit`) at most this often per map: shrinking
/// on every walk would free and regrow a busy replica's tables over and over. Between
/// shrinks, `max_keys` still bounds every map.
const SHRINK_EVERY: Duration = Duration::from_secs(60);

/// When one map was last walked and how big it may grow before the next walk.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    due_at_len: usize,
    walked: Instant,
    shrunk: Instant,
}

impl Schedule {
    fn new(now: Instant) -> Self {
        Schedule {
            due_at_len: GROWTH,
            walked: now,
            shrunk: now,
        }
    }

    /// Walks `map` if it is due; returns whether it did.
    fn run(&mut self, map: &dyn Prunable, now: Instant) -> bool {
        if map.len() < self.due_at_len && now.duration_since(self.walked) < AT_LEAST_EVERY {
            return false;
        }
        let shrink = now.duration_since(self.shrunk) >= SHRINK_EVERY;
        map.prune(shrink);
        if shrink {
            self.shrunk = now;
        }
        let kept = map.len();
        self.due_at_len = kept + GROWTH.max(kept / 4);
        self.walked = now;
        true
    }
}

/// Prunes every local map of the limiter on schedule; ends when the limiter is dropped.
///
/// On a runtime task rather than the blocking pool: the walks are short, and a blocking
/// thread sharing a core with the workers can be preempted while it holds one of the maps'
/// locks, stalling every request that needs that shard (seen as p99 spikes).
pub(super) async fn prune_loop<M: LocalMaps>(inner: Weak<M>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut schedules: Vec<Schedule> = Vec::new();
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let maps = inner.local_maps();
        schedules.resize(maps.len(), Schedule::new(now));
        for (map, schedule) in maps.iter().zip(&mut schedules) {
            schedule.run(*map, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A map of `len` keys of which `live` survive a walk.
    struct Fake {
        len: Cell<usize>,
        live: usize,
        walks: Cell<u32>,
        shrinks: Cell<u32>,
    }

    impl Prunable for Fake {
        fn len(&self) -> usize {
            self.len.get()
        }
        fn prune(&self, shrink: bool) {
            self.len.set(self.len.get().min(self.live));
            self.walks.set(self.walks.get() + 1);
            self.shrinks.set(self.shrinks.get() + u32::from(shrink));
        }
    }

    fn fake(len: usize, live: usize) -> Fake {
        Fake {
            len: Cell::new(len),
            live,
            walks: Cell::new(0),
            shrinks: Cell::new(0),
        }
    }

    #[test]
    fn a_map_is_walked_once_it_has_grown_enough() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let map = fake(GROWTH - 1, 0);
        assert!(!s.run(&map, t0 + TICK));
        map.len.set(GROWTH);
        assert!(s.run(&map, t0 + 2 * TICK));
        assert_eq!(map.len(), 0);
        // Idle keys gone: due again after another GROWTH new keys, not before.
        map.len.set(GROWTH - 1);
        assert!(!s.run(&map, t0 + 3 * TICK));
        map.len.set(GROWTH);
        assert!(s.run(&map, t0 + 4 * TICK));
    }

    #[test]
    fn a_map_of_live_keys_is_walked_in_proportion_to_its_size() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let map = fake(100_000, 100_000);
        assert!(s.run(&map, t0 + TICK));
        // Everything was live: the next walk waits for a quarter more keys.
        map.len.set(124_999);
        assert!(!s.run(&map, t0 + 2 * TICK));
        map.len.set(125_000);
        assert!(s.run(&map, t0 + 3 * TICK));
    }

    #[test]
    fn a_quiet_map_is_still_walked_and_shrunk_now_and_then() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let map = fake(10, 0);
        assert!(!s.run(&map, t0 + TICK));
        assert!(s.run(&map, t0 + AT_LEAST_EVERY));
        assert_eq!(map.shrinks.get(), 0);
        map.len.set(10);
        assert!(s.run(&map, t0 + SHRINK_EVERY));
        assert_eq!((map.walks.get(), map.shrinks.get()), (2, 1));
    }
}
