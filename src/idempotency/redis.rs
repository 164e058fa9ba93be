//! The shared store in Redis, when `limits.redis_url` is set: every replica sees every key,
//! every order in flight and every answer kept for the duplicate window.
//!
//! Keys: `payshim:idem:key:<hex>` (keyed hashes of explicit and implicit keys, never a
//! client's key or card data) and `payshim:idem:order:<uuid>`; values as in `codec.rs`. A
//! claim is `SET NX PX` in a script that returns the entry already there, so two replicas
//! cannot both claim a key. Settling is compare-and-set on the claim's own value, so a
//! replica never overwrites a claim it does not hold. Both scripts take several keys, so a
//! payment claims its key and its order in one round trip, all or nothing, and settles
//! both in one more (a standalone Redis: a multi-key script needs every key on one node).
//! Every entry expires in Redis too (claims after `idempotency.ttl`, orders after the
//! longest a payment can run), so a replica that crashed holding a claim cannot hold it
//! forever.
//!
//! Every command is bounded by `limits.redis_timeout`; a failure is [`Unavailable`], and
//! the caller applies `limits.on_store_error`.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script};

use super::Digest;
use crate::audit::hex32;

/// Claims each `KEYS[i]` in order with `ARGV[2i-1]` for `ARGV[2i]` ms (`SET NX PX`) and
/// stops at the first one already held, releasing the ones it claimed before it: all or
/// nothing, in one round trip. `{0, ''}` when all are claimed, else `{i, <the entry at
/// KEYS[i]>}` (`''` if it expired in between).
const CLAIM: &str = r#"
for i = 1, #KEYS do
  if not redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'NX', 'PX', ARGV[2 * i]) then
    local existing = redis.call('GET', KEYS[i]) or ''
    for j = 1, i - 1 do
      redis.call('DEL', KEYS[j])
    end
    return {i, existing}
  end
end
return {0, ''}
"#;

/// For each `KEYS[i]` that still holds `ARGV[3i-2]` (our claim): replaces it with
/// `ARGV[3i-1]` for `ARGV[3i]` ms, or deletes it when `ARGV[3i-1]` is empty. Returns how
/// many were ours.
const SETTLE: &str = r#"
local done = 0
for i = 1, #KEYS do
  local a = 3 * i - 2
  if redis.call('GET', KEYS[i]) == ARGV[a] then
    if ARGV[a + 1] == '' then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], ARGV[a + 1], 'PX', ARGV[a + 2])
    end
    done = done + 1
  end
end
return done
"#;

/// One entry to claim: `name` set to `value` for `ttl`, unless something holds it.
pub(crate) struct Claim {
    pub name: String,
    pub value: String,
    pub ttl: Duration,
}

/// One claim to settle: if `name` still holds `held` (ours), it becomes `value` for `ttl`;
/// an empty `value` deletes it.
pub(crate) struct Swap {
    pub name: String,
    pub held: String,
    pub value: String,
    pub ttl: Duration,
}

impl Swap {
    /// Frees our claim `held` on `name`.
    pub(crate) fn release(name: String, held: String) -> Swap {
        Swap {
            name,
            held,
            value: String::new(),
            ttl: Duration::ZERO,
        }
    }
}

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

    /// Claims every entry or none, in one round trip: `None` when all are claimed, else the
    /// index of the first one already held and the entry there (`""` if it just expired).
    pub(crate) async fn claim(
        &self,
        claims: &[Claim],
    ) -> Result<Option<(usize, String)>, Unavailable> {
        let mut inv = self.claim.prepare_invoke();
        for c in claims {
            inv.key(&c.name).arg(&c.value).arg(millis(c.ttl));
        }
        let (refused, existing): (usize, String) =
            self.run(async |c| inv.invoke_async(c).await).await?;
        Ok(refused.checked_sub(1).map(|i| (i, existing)))
    }

    /// Settles the claims that are still ours, in one round trip; returns how many were.
    pub(crate) async fn settle(&self, swaps: &[Swap]) -> Result<usize, Unavailable> {
        let mut inv = self.settle.prepare_invoke();
        for s in swaps {
            inv.key(&s.name)
                .arg(&s.held)
                .arg(&s.value)
                .arg(millis(s.ttl));
        }
        self.run(async |c| inv.invoke_async(c).await).await
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
