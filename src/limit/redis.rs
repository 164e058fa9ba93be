//! Shared limit state in Redis: every check is one atomic Lua script, so any number of
//! replicas enforce one quota together.
//!
//! - GCRA ([`GCRA`]): the key holds the theoretical arrival time (TAT, microseconds of the
//!   Redis server clock, so replica clocks do not matter) and expires when it would be
//!   indistinguishable from a fresh key. Same arithmetic as governor, so local and shared
//!   mode behave alike.
//! - Card attempts ([`ATTEMPTS`]): a sorted set of attempt fingerprints scored by the time
//!   each was first seen.
//!
//! Keys: `payshim:rl:<scope>:<key>` with binary keys hex-encoded (only keyed fingerprints
//! ever get here, never a PAN). Needs Redis 5 or later (`TIME` inside scripts).
//!
//! Availability: the [`ConnectionManager`] is created lazily (start-up neither blocks nor
//! fails when Redis is down). A background task PINGs Redis (every 500 ms while it is
//! unreachable, every 2 s otherwise); requests only use Redis while it is known to be up,
//! so an outage costs at most one `redis_timeout` per request that discovers it, not one per
//! check. After a failed probe the connection manager is replaced by a fresh one, so a
//! failed initial connect (or a reconnect that gave up) is always retried. Every command is
//! bounded by `redis_timeout` (`tokio::time::timeout`) and the manager's own connection and
//! response timeouts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script};

use crate::config::Quota;

/// GCRA. KEYS[1]: the key; ARGV[1]: emission interval T (µs); ARGV[2]: tolerance tau =
/// T * (burst - 1) (µs). Returns 0 when allowed, else the wait in ms (>= 1).
const GCRA: &str = r#"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local earliest = tat - tau
if now < earliest then
  return math.max(1, math.ceil((earliest - now) / 1000))
end
local new_tat = tat + t
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
  math.max(1, math.ceil((new_tat - now) / 1000)))
return 0
"#;

/// Distinct attempts per card. KEYS[1]: the card's set; ARGV[1]: the attempt fingerprint;
/// ARGV[2]: the window (µs); ARGV[3]: the number of distinct attempts allowed. A known
/// attempt is allowed without counting again; a refused one is not recorded. Returns 0
/// when allowed, else the wait in ms until the oldest attempt leaves the window (>= 1).
const ATTEMPTS: &str = r#"
local window = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
if redis.call('ZCARD', KEYS[1]) >= count then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000))
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(window / 1000)))
return 0
"#;

const PROBE_DOWN: Duration = Duration::from_millis(500);
const PROBE_UP: Duration = Duration::from_secs(2);

/// Redis could not answer (down, timed out, or an error reply); the caller applies
/// `on_store_error`.
#[derive(Debug)]
pub(super) struct Unavailable;

pub(super) struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// `None` when the URL could not be used at all (logged at start-up).
    client: Option<Client>,
    manager_config: ConnectionManagerConfig,
    conn: RwLock<Option<ConnectionManager>>,
    up: AtomicBool,
    /// An outage has been logged and its end has not.
    outage_logged: AtomicBool,
    timeout: Duration,
    probe_timeout: Duration,
    /// What requests get while Redis is down, for the log line.
    fallback: &'static str,
    gcra: Script,
    attempts: Script,
}

impl RedisStore {
    /// Creates the store and spawns its probe task (returned so the caller can abort it).
    /// Never blocks and never fails: an unusable URL or an unreachable server leaves the
    /// store down, which `readiness_problem` reports.
    pub(super) fn start(
        url: &str,
        timeout: Duration,
        fallback: &'static str,
    ) -> (RedisStore, tokio::task::JoinHandle<()>) {
        let timeout = timeout.max(Duration::from_millis(1));
        let connect_timeout = timeout.max(Duration::from_secs(1));
        let client = match Client::open(url) {
            Ok(c) => Some(c),
            Err(e) => {
                // The URL may hold a password: log the error kind only.
                tracing::error!(
                    error_kind = ?e.kind(),
                    "limits.redis_url cannot be used; the rate-limit store stays unavailable"
                );
                None
            }
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let shared = Arc::new(Shared {
            client,
            manager_config,
            conn: RwLock::new(None),
            up: AtomicBool::new(false),
            outage_logged: AtomicBool::new(false),
            timeout,
            probe_timeout: connect_timeout + timeout,
            fallback,
            gcra: Script::new(GCRA),
            attempts: Script::new(ATTEMPTS),
        });
        shared.renew_connection();
        let task = tokio::spawn(probe_loop(Arc::downgrade(&shared)));
        (RedisStore { shared }, task)
    }

    pub(super) fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// One GCRA check: `Ok(None)` allowed, `Ok(Some(wait))` over quota.
    pub(super) async fn gcra(
        &self,
        key: &str,
        quota: &Quota,
    ) -> Result<Option<Duration>, Unavailable> {
        let t = micros(super::local::emission_interval(quota)).max(1);
        let tau = t.saturating_mul(u64::from(quota.burst.saturating_sub(1)));
        let mut inv = self.shared.gcra.prepare_invoke();
        inv.key(key).arg(t).arg(tau);
        self.shared.run(&inv).await
    }

    /// One card-attempts check: `Ok(None)` allowed, `Ok(Some(wait))` refused.
    pub(super) async fn card_attempt(
        &self,
        key: &str,
        attempt: &[u8; 32],
        quota: &Quota,
    ) -> Result<Option<Duration>, Unavailable> {
        let mut inv = self.shared.attempts.prepare_invoke();
        inv.key(key)
            .arg(&attempt[..])
            .arg(micros(quota.period).max(1))
            .arg(quota.count);
        self.shared.run(&inv).await
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Shared {
    fn manager(&self) -> Option<ConnectionManager> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the connection manager by a fresh, lazily connecting one.
    fn renew_connection(&self) {
        let Some(client) = &self.client else { return };
        match ConnectionManager::new_lazy_with_config(client.clone(), self.manager_config.clone()) {
            Ok(m) => *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some(m),
            Err(e) => tracing::debug!(error_kind = ?e.kind(), "redis connection manager"),
        }
    }

    async fn run(
        &self,
        inv: &::redis::ScriptInvocation<'_>,
    ) -> Result<Option<Duration>, Unavailable> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(Unavailable);
        }
        let Some(mut conn) = self.manager() else {
            return Err(Unavailable);
        };
        match tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(wait_ms)) if wait_ms <= 0 => Ok(None),
            Ok(Ok(wait_ms)) => Ok(Some(Duration::from_millis(wait_ms.unsigned_abs()))),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                Err(Unavailable)
            }
            Err(_) => {
                self.mark_down("timed out");
                Err(Unavailable)
            }
        }
    }

    fn mark_down(&self, why: &str) {
        self.up.store(false, Ordering::Relaxed);
        if !self.outage_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                while_down = self.fallback,
                "rate-limit store (Redis) unreachable"
            );
        }
    }

    async fn probe(&self) -> Result<(), String> {
        let Some(mut conn) = self.manager() else {
            return Err("no usable redis_url".into());
        };
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(self.probe_timeout, ping.query_async::<String>(&mut conn)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

async fn probe_loop(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let was_up = s.up.load(Ordering::Relaxed);
        match s.probe().await {
            Ok(()) => {
                if !was_up {
                    s.up.store(true, Ordering::Relaxed);
                    if s.outage_logged.swap(false, Ordering::Relaxed) {
                        tracing::warn!("rate-limit store (Redis) reachable again");
                    } else {
                        tracing::info!("rate-limit store (Redis) connected");
                    }
                }
            }
            Err(why) => {
                s.mark_down(&why);
                // Whatever state the old manager is in, the next probe starts afresh.
                s.renew_connection();
            }
        }
        let pause = if s.up.load(Ordering::Relaxed) {
            PROBE_UP
        } else {
            PROBE_DOWN
        };
        drop(s);
        tokio::time::sleep(pause).await;
    }
}
