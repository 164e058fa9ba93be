//! The connection watchdog: closes connections that sit idle, and carries the graceful
//! shutdown to every open connection.
//!
//! A connection is idle while no request is in flight on it (from the request head being
//! parsed until its answer's body has been handed to the connection) and none has started
//! or finished for the connection's limit: `server.header_read_timeout` for HTTP/1.1 (a
//! slow or silent request head, a keep-alive connection left open, a client that does not
//! read its answer) and for an HTTP/2 connection that has had no request yet,
//! `server.idle_timeout` for an HTTP/2 connection after its first request.
//!
//! One task checks every connection's request counters each tick, so a request costs two
//! counter increments and no clock read or timer, and a connection task learns about idling
//! and shutdown from one flag it polls. Connections are closed between `limit` and
//! `limit + tick` after their last activity, never before.
//!
//! HTTP/1.1 connections are also looked at more often, every [`PARK_TICK`] (or every tick
//! if that is shorter), to tell a quiet one to park (`park.rs`) within two seconds of its
//! last answer whatever the limits are. HTTP/2 connections are checked at the limit tick
//! only.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::time::{Instant, MissedTickBehavior};

/// HTTP/1.1 connections are checked at least this often, so that a quiet one parks soon
/// (1 s: a connection that answered a request is usually asked for the next one within a
/// second, or not for a long time).
const PARK_TICK: Duration = Duration::from_secs(1);

/// What the watchdog tells a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Signal(u8);

impl Signal {
    /// The server is shutting down: finish what is in flight and close.
    pub(super) const STOP: u8 = 1;
    /// Nothing happened on the connection for its limit.
    pub(super) const IDLE: u8 = 2;
    /// HTTP/1.1: nothing happened on the connection for a whole park tick; told once per
    /// quiet spell, so that the connection can let go of its buffers (`park`).
    pub(super) const QUIET: u8 = 4;

    pub(super) fn stop(self) -> bool {
        self.0 & Self::STOP != 0
    }

    pub(super) fn idle(self) -> bool {
        self.0 & Self::IDLE != 0
    }

    pub(super) fn quiet(self) -> bool {
        self.0 & Self::QUIET != 0
    }
}

/// Time limits of connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdleLimits {
    /// HTTP/1.1 always; HTTP/2 until its first request.
    pub first_request: Duration,
    /// HTTP/2 after its first request.
    pub idle: Duration,
}

impl IdleLimits {
    /// How often connections are checked against their limits: a quarter of the shorter
    /// limit, so a connection is closed at most a quarter late. HTTP/2 connections are only
    /// checked this often: they never park, so a finer check would buy them nothing.
    fn tick(&self) -> Duration {
        (self.first_request.min(self.idle) / 4).max(Duration::from_millis(50))
    }

    /// How often HTTP/1.1 connections are checked: the tick, at most [`PARK_TICK`], and a
    /// whole number of them fits in a tick (so HTTP/2 checks keep the tick's cadence).
    fn park_tick(&self) -> Duration {
        let tick = self.tick();
        let per_tick = tick.as_millis().div_ceil(PARK_TICK.as_millis()).max(1);
        tick / u32::try_from(per_tick).unwrap_or(u32::MAX)
    }
}

/// One connection as the watchdog sees it.
pub(super) struct Watched {
    h2: bool,
    started: AtomicU64,
    finished: AtomicU64,
    /// Pending [`Signal`] bits, taken by the connection task.
    signal: AtomicU8,
    waker: AtomicWaker,
    /// The watchdog's own bookkeeping: the activity count it last saw, and when (ms since
    /// the watchdog started) it saw it change.
    seen: AtomicU64,
    quiet_since_ms: AtomicU64,
    /// Whether [`Signal::QUIET`] was raised since the last activity.
    told_quiet: AtomicBool,
}

/// Marks one request in flight until dropped: hold it until the answer's body is done
/// (or the request is abandoned), so an answer still streaming is not idleness.
pub(super) struct InFlight(Arc<Watched>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Release);
    }
}

impl Watched {
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// A count that changes whenever a request starts or finishes, and whether one is
    /// still in flight.
    fn activity(&self) -> (u64, bool) {
        // `finished` first: a request finishing between the two loads then shows as in
        // flight (never the other way round).
        let finished = self.finished.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        (started + finished, started != finished)
    }

    /// Whether the connection is still idle as the watchdog last judged it: nothing in
    /// flight and no request since. The connection task checks this before closing, since
    /// a request may have started after the watchdog looked.
    pub(super) fn still_idle(&self) -> bool {
        let (events, busy) = self.activity();
        !busy && events == self.seen.load(Ordering::Acquire)
    }

    /// The next signal, if any. Registers the task to be woken by the next one.
    pub(super) fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        if self.signal.load(Ordering::Acquire) == 0 {
            self.waker.register(cx.waker());
            if self.signal.load(Ordering::Acquire) == 0 {
                return Poll::Pending;
            }
        }
        Poll::Ready(Signal(self.signal.swap(0, Ordering::AcqRel)))
    }

    fn raise(&self, bits: u8) {
        self.signal.fetch_or(bits, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// Every open connection, checked each tick.
pub(super) struct Watchdog {
    limits: IdleLimits,
    started: Instant,
    conns: Mutex<Vec<Weak<Watched>>>,
    /// Set by [`Watchdog::stop_all`]: a connection still in its TLS handshake then is
    /// told to stop as soon as it is watched.
    stopping: AtomicBool,
}

impl Watchdog {
    pub(super) fn new(limits: IdleLimits) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            limits,
            started: Instant::now(),
            conns: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        })
    }

    /// Watches a new connection from now on (its first request is due within
    /// `first_request`).
    pub(super) fn watch(&self, h2: bool) -> Arc<Watched> {
        let watched = Arc::new(Watched {
            h2,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            signal: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            seen: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(self.now_ms()),
            told_quiet: AtomicBool::new(false),
        });
        let mut conns = self.lock();
        if self.stopping.load(Ordering::Acquire) {
            watched.raise(Signal::STOP);
        }
        conns.push(Arc::downgrade(&watched));
        watched
    }

    pub(super) fn limits(&self) -> IdleLimits {
        self.limits
    }

    /// Tells every open connection to finish and close.
    pub(super) fn stop_all(&self) {
        let conns = self.lock();
        self.stopping.store(true, Ordering::Release);
        for conn in conns.iter().filter_map(Weak::upgrade) {
            conn.raise(Signal::STOP);
        }
    }

    /// Checks HTTP/1.1 connections every park tick and all of them every tick, until
    /// dropped with the task running it.
    pub(super) async fn run(self: Arc<Self>) {
        let park_tick = self.limits.park_tick();
        let per_tick = (self.limits.tick().as_millis() / park_tick.as_millis()).max(1);
        let mut ticks = tokio::time::interval(park_tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for n in 0u128.. {
            ticks.tick().await;
            self.check(n % per_tick == 0);
        }
    }

    /// Checks every HTTP/1.1 connection, and the HTTP/2 ones too if `all`.
    fn check(&self, all: bool) {
        let now = self.now_ms();
        self.lock().retain(|conn| {
            let Some(conn) = conn.upgrade() else {
                return false;
            };
            if all || !conn.h2 {
                self.check_one(&conn, now);
            }
            true
        });
    }

    fn check_one(&self, conn: &Watched, now: u64) {
        let (events, busy) = conn.activity();
        if busy || events != conn.seen.load(Ordering::Acquire) {
            conn.seen.store(events, Ordering::Release);
            conn.quiet_since_ms.store(now, Ordering::Release);
            conn.told_quiet.store(false, Ordering::Release);
            return;
        }
        let limit = if conn.h2 && events > 0 {
            self.limits.idle
        } else {
            self.limits.first_request
        };
        let quiet = now.saturating_sub(conn.quiet_since_ms.load(Ordering::Acquire));
        if quiet >= limit.as_millis() as u64 {
            conn.raise(Signal::IDLE);
        } else if !conn.h2
            && quiet >= self.limits.park_tick().as_millis() as u64
            && !conn.told_quiet.swap(true, Ordering::AcqRel)
        {
            conn.raise(Signal::QUIET);
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Watched>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: IdleLimits = IdleLimits {
        first_request: Duration::from_secs(4),
        idle: Duration::from_secs(20),
    };

    /// The next signal other than QUIET alone for `conn` and how long after the call it
    /// came; None within `wait`.
    async fn next_signal(conn: &Watched, wait: Duration) -> Option<(Signal, Duration)> {
        let start = Instant::now();
        let signal = std::future::poll_fn(|cx| match conn.poll_signal(cx) {
            Poll::Ready(s) if s.0 == Signal::QUIET => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            polled => polled,
        });
        let signal = tokio::time::timeout(wait, signal).await.ok()?;
        Some((signal, start.elapsed()))
    }

    /// The QUIET signals `conn` gets within `wait`, and when (after the call) the first came.
    async fn quiet_signals(conn: &Watched, wait: Duration) -> (usize, Option<Duration>) {
        let start = Instant::now();
        let (mut count, mut first) = (0, None);
        let _ = tokio::time::timeout(wait, async {
            loop {
                let signal = std::future::poll_fn(|cx| conn.poll_signal(cx)).await;
                if signal.quiet() {
                    count += 1;
                    first.get_or_insert(start.elapsed());
                }
            }
        })
        .await;
        (count, first)
    }

    fn started() -> Arc<Watchdog> {
        let watchdog = Watchdog::new(LIMITS);
        tokio::spawn(watchdog.clone().run());
        watchdog
    }

    #[tokio::test(start_paused = true)]
    async fn idle_comes_after_the_limit_and_at_most_a_tick_later() {
        let tick = LIMITS.tick();
        // (HTTP/2?, requests before going quiet, the limit that applies)
        let cases = [
            (false, 0, LIMITS.first_request),
            (false, 3, LIMITS.first_request),
            (true, 0, LIMITS.first_request),
            (true, 1, LIMITS.idle),
        ];
        for (h2, requests, limit) in cases {
            let watchdog = started();
            let conn = watchdog.watch(h2);
            for _ in 0..requests {
                let request = conn.begin();
                tokio::time::sleep(Duration::from_millis(700)).await;
                drop(request);
            }
            let (signal, after) = next_signal(&conn, limit * 3)
                .await
                .unwrap_or_else(|| panic!("h2 {h2}, {requests} requests: never idle"));
            assert!(signal.idle() && !signal.stop(), "{signal:?}");
            assert!(
                after >= limit && after <= limit + tick,
                "h2 {h2}, {requests} requests: idle after {after:?}, limit {limit:?}"
            );
            assert!(conn.still_idle());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle() {
        let watchdog = started();
        let conn = watchdog.watch(false);
        let request = conn.begin();
        assert_eq!(next_signal(&conn, LIMITS.first_request * 10).await, None);
        drop(request);
        let (signal, after) = next_signal(&conn, LIMITS.first_request * 3).await.unwrap();
        assert!(signal.idle());
        assert!(after >= LIMITS.first_request, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_after_the_idle_signal_keeps_the_connection() {
        let watchdog = started();
        let conn = watchdog.watch(false);
        let (signal, _) = next_signal(&conn, LIMITS.first_request * 3).await.unwrap();
        assert!(signal.idle());
        let request = conn.begin();
        assert!(
            !conn.still_idle(),
            "a request began after the watchdog looked"
        );
        drop(request);
        assert!(
            !conn.still_idle(),
            "a request finished after the watchdog looked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_reaches_open_connections_and_ones_still_in_their_handshake() {
        let watchdog = started();
        let open = watchdog.watch(false);
        let _busy = open.begin();
        watchdog.stop_all();
        let (signal, after) = next_signal(&open, Duration::from_millis(1)).await.unwrap();
        assert!(signal.stop() && !signal.idle(), "{signal:?}");
        assert_eq!(after, Duration::ZERO);
        let late = watchdog.watch(true);
        let (signal, _) = next_signal(&late, Duration::from_millis(1)).await.unwrap();
        assert!(signal.stop());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_http1_connection_is_told_once_per_quiet_spell() {
        let tick = LIMITS.park_tick();
        assert_eq!(
            tick,
            Duration::from_secs(1),
            "LIMITS' tick is 1 s, and so is PARK_TICK"
        );
        let watchdog = started();
        let conn = watchdog.watch(false);
        let (count, first) = quiet_signals(&conn, tick * 3).await;
        assert_eq!(count, 1, "one QUIET per quiet spell");
        let first = first.unwrap();
        assert!(first >= tick && first <= tick * 2, "QUIET after {first:?}");
        // A request in flight is never quiet, however long it takes.
        let request = conn.begin();
        assert_eq!(quiet_signals(&conn, tick * 3).await.0, 0);
        drop(request);
        // Done: quiet again, told once more, long before the idle limit.
        let (count, first) = quiet_signals(&conn, tick * 3).await;
        assert_eq!(count, 1);
        assert!(first.unwrap() <= tick * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_are_never_told_quiet() {
        let watchdog = started();
        let conn = watchdog.watch(true);
        drop(conn.begin());
        assert_eq!(quiet_signals(&conn, LIMITS.idle / 2).await.0, 0);
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shorter_limit_and_the_park_tick_at_most_a_second() {
        let limits = |first: u64, idle: u64| IdleLimits {
            first_request: Duration::from_millis(first),
            idle: Duration::from_millis(idle),
        };
        // (first request, idle, tick, park tick) in milliseconds
        let cases = [
            (2_000, 60_000, 500, 500),
            (10_000, 60_000, 2_500, 833),
            (4_000, 20_000, 1_000, 1_000),
            (600_000, 600_000, 150_000, 1_000),
            (100, 100, 50, 50),
        ];
        for (first, idle, tick, park) in cases {
            let l = limits(first, idle);
            assert_eq!(l.tick().as_millis(), tick, "{first}/{idle}");
            assert_eq!(l.park_tick().as_millis(), park, "{first}/{idle}");
        }
    }

    /// The bench's limits (10 min): HTTP/1.1 is told quiet within two seconds, HTTP/2 is
    /// not checked more often than the quarter of the limit.
    #[tokio::test(start_paused = true)]
    async fn long_limits_still_park_http1_within_two_seconds() {
        let long = Duration::from_secs(600);
        let watchdog = Watchdog::new(IdleLimits {
            first_request: long,
            idle: long,
        });
        tokio::spawn(watchdog.clone().run());
        let h1 = watchdog.watch(false);
        let (count, first) = quiet_signals(&h1, Duration::from_secs(3)).await;
        assert_eq!(count, 1);
        assert!(first.unwrap() <= Duration::from_secs(2), "{first:?}");
        let h2 = watchdog.watch(true);
        drop(h2.begin());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            h2.seen.load(Ordering::Acquire),
            0,
            "HTTP/2 checked before a quarter of the limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_connections_leave_the_watch_list() {
        let watchdog = started();
        let kept = watchdog.watch(false);
        drop(watchdog.watch(false));
        drop(watchdog.watch(true));
        tokio::time::sleep(LIMITS.tick() * 2).await;
        assert_eq!(watchdog.lock().len(), 1);
        drop(kept);
        tokio::time::sleep(LIMITS.tick() * 2).await;
        assert!(watchdog.lock().is_empty());
    }
}
