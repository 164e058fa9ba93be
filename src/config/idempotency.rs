//! The `[idempotency]` section: how long an `Idempotency-Key` answer is kept, how many keys
//! are tracked locally, and the duplicate window for payments sent without a key.

use std::time::Duration;

use super::parse::{duration, positive};
use super::raw::RawIdempotency;
use super::{ConfigError, Result};

#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// How long a completed answer is replayed for its key.
    pub ttl: Duration,
    /// Cap on locally tracked keys (memory bound).
    pub max_keys: usize,
    /// An identical payment without a key within this time after a successful one replays
    /// the first answer; `None` (`"off"`) turns the check off.
    pub duplicate_window: Option<Duration>,
    /// A second payment for an order while one is in flight gets 409 (key or no key).
    pub one_payment_per_order: bool,
}

pub(super) fn idempotency_config(raw: RawIdempotency) -> Result<IdempotencyConfig> {
    let duplicate_window = match raw.duplicate_window.as_deref() {
        Some("off") => None,
        v => Some(duration("idempotency.duplicate_window", v, "10min")?),
    };
    let ttl = duration("idempotency.ttl", raw.ttl.as_deref(), "24h")?;
    if duplicate_window.is_some_and(|w| w > ttl) {
        return Err(ConfigError::new(
            "idempotency.duplicate_window",
            "must not be longer than idempotency.ttl",
        ));
    }
    Ok(IdempotencyConfig {
        ttl,
        max_keys: positive("idempotency.max_keys", raw.max_keys.unwrap_or(100_000))?,
        duplicate_window,
        one_payment_per_order: raw.one_payment_per_order.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ttl: Option<&str>, max_keys: Option<usize>, window: Option<&str>) -> RawIdempotency {
        RawIdempotency {
            ttl: ttl.map(str::to_string),
            max_keys,
            duplicate_window: window.map(str::to_string),
            one_payment_per_order: None,
        }
    }

    #[test]
    fn defaults_and_off() {
        let c = idempotency_config(raw(None, None, None)).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(86_400));
        assert_eq!(c.max_keys, 100_000);
        assert_eq!(c.duplicate_window, Some(Duration::from_secs(600)));
        assert!(c.one_payment_per_order);
        let c = idempotency_config(raw(None, None, Some("off"))).unwrap();
        assert_eq!(c.duplicate_window, None);
    }

    #[test]
    fn errors_name_the_key() {
        for (r, key) in [
            (raw(Some("soon"), None, None), "idempotency.ttl"),
            (raw(None, Some(0), None), "idempotency.max_keys"),
            (raw(None, None, Some("x")), "idempotency.duplicate_window"),
            (
                raw(Some("1min"), None, Some("2min")),
                "idempotency.duplicate_window",
            ),
        ] {
            assert_eq!(idempotency_config(r).unwrap_err().key, key);
        }
    }
}
