//! The per-client decline breaker: a storefront whose recent payments are mostly declined
//! by the upstream (the signature of card testing through that storefront) is refused for
//! a cool-down.
//!
//! The breaker is local to each replica, also in shared (Redis) mode: it is fed by the
//! upstream answers this replica saw. Behind a load balancer every replica sees a sample of
//! the same storefront's traffic with the same decline share, so each trips at about the
//! same point; the cost is that each replica needs `decline_window` outcomes of its own.
//! Keeping it local keeps an extra Redis round trip off every payment and keeps the breaker
//! working while Redis is down.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::log_every::LogEvery;

pub(super) struct Breaker {
    ratio: f64,
    window: usize,
    cooldown: Duration,
    max_keys: usize,
    /// Reference point for the `open_until` atomics.
    epoch: Instant,
    /// Read-locked on every check; write-locked only when a client is seen the first time.
    clients: RwLock<HashMap<String, Arc<ClientBreaker>>>,
    log: LogEvery,
}

struct ClientBreaker {
    /// Nanoseconds since `epoch` until which the client is refused; 0 = closed.
    open_until: AtomicU64,
    recent: Mutex<Recent>,
}

/// The last `window` outcomes of one client.
#[derive(Default)]
struct Recent {
    outcomes: VecDeque<bool>,
    declines: usize,
}

impl Breaker {
    /// `window == 0` turns the breaker off.
    pub(super) fn new(ratio: f64, window: u32, cooldown: Duration, max_keys: usize) -> Self {
        Breaker {
            ratio,
            window: window as usize,
            cooldown,
            max_keys: max_keys.max(1),
            epoch: Instant::now(),
            clients: RwLock::new(HashMap::new()),
            log: LogEvery::new(Duration::from_secs(60)),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `Err(remaining cool-down)` while the client's breaker is open.
    pub(super) fn check(&self, client_id: &str) -> Result<(), Duration> {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        let Some(client) = clients.get(client_id) else {
            return Ok(());
        };
        let until = client.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(());
        }
        let now = self.now();
        if now >= until {
            return Ok(());
        }
        Err(Duration::from_nanos(until - now).max(Duration::from_millis(1)))
    }

    /// Records one upstream outcome; returns true when this outcome tripped the breaker.
    pub(super) fn record(&self, client_id: &str, declined: bool) -> bool {
        if self.window == 0 {
            return false;
        }
        let client = self.client(client_id);
        let now = self.now();
        if now < client.open_until.load(Ordering::Relaxed) {
            // Answers to requests let through before the trip: the window starts afresh
            // after the cool-down.
            return false;
        }
        let mut recent = client.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.outcomes.push_back(declined);
        recent.declines += usize::from(declined);
        if recent.outcomes.len() > self.window
            && let Some(old) = recent.outcomes.pop_front()
        {
            recent.declines -= usize::from(old);
        }
        let tripped = recent.outcomes.len() >= self.window
            && recent.declines > 0
            && recent.declines as f64 / self.window as f64 >= self.ratio;
        if tripped {
            let until = now.saturating_add(
                u64::try_from(self.cooldown.as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
            client.open_until.store(until, Ordering::Relaxed);
            let declines = recent.declines;
            recent.outcomes.clear();
            recent.declines = 0;
            drop(recent);
            tracing::warn!(
                client_id,
                declines,
                window = self.window,
                cooldown_s = self.cooldown.as_secs_f64(),
                "decline breaker tripped: most recent payments of this client were declined \
                 upstream (card testing?); refusing its payments for the cool-down"
            );
        }
        tripped
    }

    fn client(&self, client_id: &str) -> Arc<ClientBreaker> {
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(client_id)
        {
            return c.clone();
        }
        let mut clients = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        if clients.len() >= self.max_keys && !clients.contains_key(client_id) {
            // Client ids are authenticated storefronts, so this only happens with more
            // configured clients than max_keys. Keep the open breakers.
            let now = self.now();
            clients.retain(|_, c| c.open_until.load(Ordering::Relaxed) > now);
            if self.log.ready() {
                tracing::warn!(
                    max_keys = self.max_keys,
                    "decline breaker key cap reached; forgot the history of closed breakers"
                );
            }
        }
        clients
            .entry(client_id.to_owned())
            .or_insert_with(|| {
                Arc::new(ClientBreaker {
                    open_until: AtomicU64::new(0),
                    recent: Mutex::new(Recent::default()),
                })
            })
            .clone()
    }

    pub(super) fn len(&self) -> usize {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_at_the_ratio_after_the_window_and_recovers() {
        let b = Breaker::new(0.8, 10, Duration::from_millis(200), 100);
        // Fewer than `window` outcomes never trip, even if all are declines.
        for _ in 0..9 {
            assert!(!b.record("shop", true));
        }
        assert!(b.check("shop").is_ok());
        // 9 declines + 1 approval = 0.9 >= 0.8 at the 10th outcome.
        assert!(b.record("shop", false));
        let retry = b.check("shop").unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(200));
        assert!(b.check("other").is_ok());
        // Outcomes during the cool-down are ignored.
        for _ in 0..20 {
            assert!(!b.record("shop", true));
        }
        std::thread::sleep(Duration::from_millis(220));
        assert!(b.check("shop").is_ok());
        // A fresh window after the cool-down.
        for _ in 0..9 {
            assert!(!b.record("shop", true));
        }
        assert!(b.check("shop").is_ok());
    }

    #[test]
    fn below_the_ratio_does_not_trip() {
        let b = Breaker::new(0.8, 10, Duration::from_secs(60), 100);
        // A sliding window of 7 declines in 10 (0.7) for a long time.
        for i in 0..200 {
            assert!(!b.record("shop", i % 10 < 7));
        }
        assert!(b.check("shop").is_ok());
        // Exactly the ratio trips: 8 of the last 10.
        let b = Breaker::new(0.8, 10, Duration::from_secs(60), 100);
        let tripped: Vec<bool> = (0..10).map(|i| b.record("shop", i >= 2)).collect();
        assert_eq!(tripped.iter().filter(|t| **t).count(), 1);
        assert!(tripped[9]);
    }

    #[test]
    fn window_zero_is_off_and_ratio_zero_needs_a_decline() {
        let b = Breaker::new(0.8, 0, Duration::from_secs(60), 100);
        for _ in 0..100 {
            assert!(!b.record("shop", true));
        }
        assert_eq!(b.len(), 0);
        let b = Breaker::new(0.0, 5, Duration::from_secs(60), 100);
        for _ in 0..100 {
            assert!(!b.record("shop", false));
        }
        assert!(b.check("shop").is_ok());
    }
}
