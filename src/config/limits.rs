//! The `[limits]` section: rate-limit quotas, the decline breaker and the shared store.

use std::time::Duration;

use super::parse::{duration, positive, size};
use super::quota::{Quota, parse_quota};
use super::raw::RawLimits;
use super::{ConfigError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Deny,
    Local,
}

impl OnStoreError {
    /// The config value, as `check-config` prints it back.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Deny => "deny",
            OnStoreError::Local => "local",
        }
    }
}

#[derive(Debug)]
pub struct LimitsConfig {
    pub per_client: Option<Quota>,
    pub per_ip: Option<Quota>,
    pub per_order: Option<Quota>,
    pub per_card: Option<Quota>,
    /// Distinct (expiry, CVV) combinations tried per card in a window (card cracking).
    pub card_attempts: Option<Quota>,
    /// Per-client breaker: throttle a storefront whose recent payments are mostly declined.
    pub decline_ratio: f64,
    pub decline_window: u32,
    pub decline_cooldown: Duration,
    pub max_keys: usize,
    pub max_body: usize,
    pub redis_url: Option<String>,
    pub redis_timeout: Duration,
    pub on_store_error: OnStoreError,
}

pub(super) fn limits_config(raw: RawLimits) -> Result<LimitsConfig> {
    let quota_or = |key: &str, v: Option<&str>, default: Option<&str>| -> Result<Option<Quota>> {
        match v.or(default) {
            None | Some("off") => Ok(None),
            Some(s) => parse_quota(s)
                .map(Some)
                .map_err(|m| ConfigError::new(key, m)),
        }
    };
    let on_store_error = match raw.on_store_error.as_deref().unwrap_or("deny") {
        "deny" => OnStoreError::Deny,
        "local" => OnStoreError::Local,
        _ => {
            return Err(ConfigError::new(
                "limits.on_store_error",
                "expected \"deny\" (fail closed) or \"local\" (fall back to local limits)",
            ));
        }
    };
    if let Some(url) = &raw.redis_url
        && !url.starts_with("redis://")
    {
        return Err(ConfigError::new(
            "limits.redis_url",
            "expected a URL like redis://127.0.0.1:6379 (rediss:// is not supported: \
             run Redis on a private network or through a local TLS tunnel)",
        ));
    }
    let decline_ratio = raw.decline_ratio.unwrap_or(0.8);
    if !(decline_ratio > 0.0 && decline_ratio <= 1.0) {
        return Err(ConfigError::new(
            "limits.decline_ratio",
            "expected a fraction above 0 and at most 1, e.g. 0.8",
        ));
    }
    Ok(LimitsConfig {
        per_client: quota_or("limits.per_client", raw.per_client.as_deref(), Some("50/s"))?,
        per_ip: quota_or("limits.per_ip", raw.per_ip.as_deref(), Some("10/s"))?,
        per_order: quota_or(
            "limits.per_order",
            raw.per_order.as_deref(),
            Some("5/10min"),
        )?,
        per_card: quota_or("limits.per_card", raw.per_card.as_deref(), Some("5/h"))?,
        card_attempts: quota_or(
            "limits.card_attempts",
            raw.card_attempts.as_deref(),
            Some("3/h"),
        )?,
        decline_ratio,
        decline_window: raw.decline_window.unwrap_or(20),
        decline_cooldown: duration(
            "limits.decline_cooldown",
            raw.decline_cooldown.as_deref(),
            "5min",
        )?,
        max_keys: positive("limits.max_keys", raw.max_keys.unwrap_or(100_000))?,
        max_body: size("limits.max_body", raw.max_body.as_deref(), "16KiB")? as usize,
        redis_url: raw.redis_url,
        redis_timeout: duration(
            "limits.redis_timeout",
            raw.redis_timeout.as_deref(),
            "250ms",
        )?,
        on_store_error,
    })
}
