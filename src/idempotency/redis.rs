//! The shared store in Redis, when `limits.redis_url` is set: every replica sees every key,
//! every order in flight and every answer kept for the duplicate window.
//!
//! Keys: `payshim:idem:key:<hex>` (keyed hashes of explicit and implicit keys, never a
//! client's key or card data) and `payshim:idem:order:<uuid>`; values as in `codec.rs`. A
//! claim is one `SET NX PX` in a script that returns the entry already there, so two
//! replicas cannot both claim a key. Settling is compare-and-set on the claim's own value,
//! so a replica never overwrites a claim it does not hold. Every entry expires in Redis
//! too (claims after `idempotency.ttl`, orders after the longest a payment can run), so a
//! replica that crashed holding a claim cannot hold it forever.
//!
//! Every command is bounded by `limits.redis_timeout`; a failure is [`Unavailable`], and
//! the caller applies `limits.on_store_error`.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script};

use super::Digest;
use crate::audit::hex32;

/// Claims `KEYS[1]` with `ARGV[1]` for `ARGV[2]` ms: `{1, ''}` when claimed, else
/// `{0, <the entry there>}` (`''` if it expired in between).
const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, ''}
end
return {0, redis.call('GET', KEYS[1]) or ''}
"#;

/// If `KEYS[1]` still holds `ARGV[1]` (our claim), replaces it with `ARGV[2]` for
/// `ARGV[3]` ms, or deletes it when `ARGV[2]` is empty. Returns 1 when it did.
const SETTLE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"#;

/// Redis could not answer in time (down, timed out, or an error reply).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unavailable;

pub(crate) struct RedisIdempotency {
    conn: Option<ConnectionManager>,
    timeout: Duration,
    claim: Script,
    settle: Script,
}

pub(crate) fn key_name(key: &Digest) -> String {
    format!("payshim:idem:key:{}", hex32(key))
}

pub(crate) fn order_name(order: &uuid::Uuid) -> String {
    format!("payshim:idem:order:{}", order.hyphenated())
}

impl RedisIdempotency {
    /// Connects lazily: start-up neither blocks nor fails when Redis is down.
    pub(crate) fn new(url: &str, timeout: Duration) -> RedisIdempotency {
        let timeout = timeout.max(Duration::from_millis(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = Client::open(url)
            .and_then(|c| ConnectionManager::new_lazy_with_config(c, config))
            .inspect_err(|e| {
                // The URL may hold a password: the error kind only.
                tracing::error!(
                    error_kind = ?e.kind(),
                    "limits.redis_url cannot be used; the idempotency store stays unavailable"
                );
            })
            .ok();
        RedisIdempotency {
            conn,
            timeout,
            claim: Script::new(CLAIM),
            settle: Script::new(SETTLE),
        }
    }

    /// Runs one command or script, bounded by the timeout.
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> ::redis::RedisResult<T>,
    ) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone().ok_or(Unavailable)?;
        match tokio::time::timeout(self.timeout, f(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::warn!(error_kind = ?e.kind(), "idempotency store (Redis) failed");
                Err(Unavailable)
            }
            Err(_) => {
                tracing::warn!("idempotency store (Redis) timed out");
                Err(Unavailable)
            }
        }
    }

    /// Claims `name` with `value` for `ttl`: `None` when claimed, else the entry there.
    pub(crate) async fn claim(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, Unavailable> {
        let mut inv = self.claim.prepare_invoke();
        inv.key(name).arg(value).arg(millis(ttl));
        let (claimed, existing): (i64, String) =
            self.run(async |c| inv.invoke_async(c).await).await?;
        Ok((claimed != 1).then_some(existing))
    }

    /// Replaces our claim `held` on `name` with `value` for `ttl` (`""`: deletes it);
    /// `false` when `name` no longer holds `held`.
    pub(crate) async fn settle(
        &self,
        name: &str,
        held: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Unavailable> {
        let mut inv = self.settle.prepare_invoke();
        inv.key(name).arg(held).arg(value).arg(millis(ttl));
        let done: i64 = self.run(async |c| inv.invoke_async(c).await).await?;
        Ok(done == 1)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
