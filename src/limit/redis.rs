//! Shared limit state in Redis: every check is one atomic Lua script, so any number of
//! replicas enforce one quota together.
//!
//! - GCRA: the key holds the theoretical arrival time (TAT, microseconds of the Redis
//!   server clock, so replica clocks do not matter) and expires when it would be
//!   indistinguishable from a fresh key. Same arithmetic as governor, so local and shared
//!   mode behave alike.
//! - Card attempts: a sorted set of attempt fingerprints scored by the time each was first
//!   seen.
//!
//! Both live in one script ([`CHECKS`]) that runs a request's checks in order, so a payment
//! costs one round trip for its order and card checks (a standalone Redis: a multi-key
//! script needs every key on one node).
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

use super::emission::emission_interval;

/// The checks of one request, in order, atomically; stops at the first refusal. One script
/// for every kind, so a payment's order, card-attempts and card checks cost one round trip.
///
/// KEYS[i]: the key of check i. ARGV, per check in order, its kind and arguments:
/// - `gcra`, T, tau: GCRA. The key holds the theoretical arrival time (TAT, µs of the Redis
///   server clock) and expires when it would equal a fresh key's. T = emission interval,
///   tau = T * (burst - 1), both µs.
/// - `attempts`, fingerprint, window (µs), count: distinct attempts per card, a sorted set
///   of attempt fingerprints scored by first sight. A known attempt is allowed without
///   counting again; a refused one is not recorded.
///
/// Returns {0, 0} when all are allowed, else {i, wait in ms (>= 1)} for the refusing check.
const CHECKS: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local a = 1
for i = 1, #KEYS do
  local key = KEYS[i]
  local wait = 0
  if ARGV[a] == 'gcra' then
    local t = tonumber(ARGV[a + 1])
    local tau = tonumber(ARGV[a + 2])
    a = a + 3
    local tat = tonumber(redis.call('GET', key))
    if tat == nil or tat < now then
      tat = now
    end
    local earliest = tat - tau
    if now < earliest then
      wait = math.max(1, math.ceil((earliest - now) / 1000))
    else
      local new_tat = tat + t
      redis.call('SET', key, string.format('%.0f', new_tat), 'PX',
        math.max(1, math.ceil((new_tat - now) / 1000)))
    end
  else
    local attempt = ARGV[a + 1]
    local window = tonumber(ARGV[a + 2])
    local count = tonumber(ARGV[a + 3])
    a = a + 4
    redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now - window))
    if not redis.call('ZSCORE', key, attempt) then
      if redis.call('ZCARD', key) >= count then
        local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        wait = math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000))
      else
        redis.call('ZADD', key, string.format('%.0f', now), attempt)
        redis.call('PEXPIRE', key, math.max(1, math.ceil(window / 1000)))
      end
    end
  end
  if wait > 0 then
    return {i, wait}
  end
end
return {0, 0}
"#;

/// One check for [`RedisStore::run`].
pub(super) enum Check<'a> {
    Gcra {
        key: String,
        quota: &'a Quota,
    },
    Attempts {
        key: String,
        attempt: &'a [u8; 32],
        quota: &'a Quota,
    },
}

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
    checks: Script,
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
            checks: Script::new(CHECKS),
        });
        shared.renew_connection();
        let task = tokio::spawn(probe_loop(Arc::downgrade(&shared)));
        (RedisStore { shared }, task)
    }

    pub(super) fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// Runs `checks` in order as one atomic script: `Ok(None)` all allowed,
    /// `Ok(Some((i, wait)))` when `checks[i]` refused (the later ones did not run).
    ///
    /// The script call's future is boxed: it is large, and every limit check's future
    /// (awaited on every request, with or without Redis) would otherwise carry its size, to
    /// be copied at each await of the request path.
    pub(super) async fn run(
        &self,
        checks: &[Check<'_>],
    ) -> Result<Option<(usize, Duration)>, Unavailable> {
        Box::pin(self.run_script(checks)).await
    }

    async fn run_script(
        &self,
        checks: &[Check<'_>],
    ) -> Result<Option<(usize, Duration)>, Unavailable> {
        let mut inv = self.shared.checks.prepare_invoke();
        for check in checks {
            match check {
                Check::Gcra { key, quota } => {
                    let t = micros(emission_interval(quota)).max(1);
                    let tau = t.saturating_mul(u64::from(quota.burst.saturating_sub(1)));
                    inv.key(key).arg("gcra").arg(t).arg(tau);
                }
                Check::Attempts {
                    key,
                    attempt,
                    quota,
                } => {
                    inv.key(key)
                        .arg("attempts")
                        .arg(&attempt[..])
                        .arg(micros(quota.period).max(1))
                        .arg(quota.count);
                }
            }
        }
        let (index, wait_ms) = self.shared.invoke(&inv).await?;
        Ok(match usize::try_from(index) {
            Ok(i) if i >= 1 && i <= checks.len() && wait_ms > 0 => {
                Some((i - 1, Duration::from_millis(wait_ms.unsigned_abs())))
            }
            _ => None,
        })
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

    async fn invoke(&self, inv: &::redis::ScriptInvocation<'_>) -> Result<(i64, i64), Unavailable> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(Unavailable);
        }
        let Some(mut conn) = self.manager() else {
            return Err(Unavailable);
        };
        match tokio::time::timeout(self.timeout, inv.invoke_async::<(i64, i64)>(&mut conn)).await {
            Ok(Ok(verdict)) => Ok(verdict),
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
