//! Where idle and shared connections wait: a LIFO stack of idle HTTP/1.1 connections (the
//! most recently used first, so the oldest reach the idle timeout and leave) and the list
//! of HTTP/2 connections (the newest takes new requests).
//!
//! Checkout and return hold a mutex for O(1) work each; connections are dropped (closed)
//! after the lock is released. The sweep that closes expired connections runs from one
//! task per pool, a quarter of `upstream.pool_idle_timeout` apart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::http1::{self, Idle};
use super::http2;

pub(crate) struct Store {
    h1: Mutex<VecDeque<Idle>>,
    h2: Mutex<VecDeque<Arc<http2::Shared>>>,
    idle_timeout: Duration,
    max_idle: usize,
    /// The origin of the millisecond clock kept in atomics.
    epoch: Instant,
}

/// A poisoned lock only means another thread panicked mid-push or mid-pop of a queue,
/// which leaves it consistent: keep using it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    pub(crate) fn new(idle_timeout: Duration, max_idle: usize) -> Store {
        Store {
            h1: Mutex::new(VecDeque::new()),
            h2: Mutex::new(VecDeque::new()),
            idle_timeout,
            max_idle,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// False with `pool_max_idle = 0`: no connection is kept for a later request.
    pub(crate) fn keeps_connections(&self) -> bool {
        self.max_idle > 0
    }

    /// Milliseconds since the pool was made.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The most recently idle HTTP/1.1 connection that is still open and not expired;
    /// the ones passed over are closed.
    pub(crate) fn take_h1(&self) -> Option<http1::Sender> {
        loop {
            let idle = lock(&self.h1).pop_back()?;
            if !idle.sender.is_closed() && idle.since.elapsed() < self.idle_timeout {
                return Some(idle.sender);
            }
        }
    }

    /// Puts a connection whose answer was read to the end back; over `max_idle`, the
    /// longest idle one is closed instead.
    pub(crate) fn put_h1(&self, sender: http1::Sender) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let idle = Idle {
            sender,
            since: Instant::now(),
        };
        let evicted = {
            let mut stack = lock(&self.h1);
            stack.push_back(idle);
            (stack.len() > self.max_idle).then(|| stack.pop_front())
        };
        drop(evicted);
    }

    /// The newest HTTP/2 connection with a free stream slot, its slot taken; closed ones
    /// found on top are dropped from the list.
    pub(crate) fn acquire_h2(&self) -> Option<Arc<http2::Shared>> {
        loop {
            let newest = lock(&self.h2).back().cloned()?;
            if !newest.is_closed() {
                return newest.try_acquire().then_some(newest);
            }
            self.remove_h2(&newest);
        }
    }

    /// Adds a new HTTP/2 connection for later requests; over `max_idle` connections the
    /// oldest leaves the list (it closes once its requests are done).
    pub(crate) fn add_h2(&self, conn: Arc<http2::Shared>) {
        if self.max_idle == 0 {
            return;
        }
        let evicted = {
            let mut list = lock(&self.h2);
            list.push_back(conn);
            (list.len() > self.max_idle).then(|| list.pop_front())
        };
        drop(evicted);
    }

    /// Drops `conn` from the list if it is the newest (closed connections elsewhere in
    /// the list go at the next sweep).
    pub(crate) fn remove_h2(&self, conn: &Arc<http2::Shared>) {
        let removed = {
            let mut list = lock(&self.h2);
            match list.back() {
                Some(newest) if Arc::ptr_eq(newest, conn) => list.pop_back(),
                _ => None,
            }
        };
        drop(removed);
    }

    /// Closes every connection idle for `pool_idle_timeout` or found closed. HTTP/1.1:
    /// the oldest are at the bottom of the stack, taken one per lock. HTTP/2: one pass
    /// over the list (a connection holds up to the server's stream limit of requests, so
    /// it is short).
    pub(crate) fn sweep(&self) {
        loop {
            let expired = {
                let mut stack = lock(&self.h1);
                match stack.front() {
                    Some(idle)
                        if idle.sender.is_closed() || idle.since.elapsed() >= self.idle_timeout =>
                    {
                        stack.pop_front()
                    }
                    _ => None,
                }
            };
            if expired.is_none() {
                break;
            }
        }
        let now = self.now_ms();
        let timeout = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut gone = Vec::new();
        lock(&self.h2).retain(|conn| {
            let keep = !conn.is_closed() && !conn.idle_for(now, timeout);
            if !keep {
                gone.push(conn.clone());
            }
            keep
        });
        drop(gone);
    }

    /// Idle HTTP/1.1 connections and listed HTTP/2 connections (tests).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (lock(&self.h1).len(), lock(&self.h2).len())
    }
}
