//! Why a limit check refused a request; the caller turns it into 429 or 503.

use std::time::Duration;

use super::scope::Scope;

/// Why a limit check refused a request. Carries no key: card fingerprints and client ids
/// stay out of error texts.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Over quota: answer 429 with `Retry-After` ([`LimitError::retry_after_secs`]).
    #[error("rate limited")]
    Exceeded { scope: Scope, retry_after: Duration },
    /// Redis is down and `on_store_error = "deny"`: answer 503.
    #[error("limit store unavailable")]
    StoreUnavailable,
}

impl LimitError {
    /// `Retry-After` in whole seconds, rounded up and at least 1; `None` for
    /// `StoreUnavailable`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            LimitError::Exceeded { retry_after, .. } => {
                let s = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Some(s.max(1))
            }
            LimitError::StoreUnavailable => None,
        }
    }
}

/// The `Exceeded` error of `scope`, for the `map_err` calls of the checks.
pub(super) fn exceeded(scope: Scope, retry_after: Duration) -> LimitError {
    LimitError::Exceeded { scope, retry_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_secs_rounds_up() {
        let e = |ms| LimitError::Exceeded {
            scope: Scope::Ip,
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(e(1).retry_after_secs(), Some(1));
        assert_eq!(e(1000).retry_after_secs(), Some(1));
        assert_eq!(e(1001).retry_after_secs(), Some(2));
        assert_eq!(e(120_000).retry_after_secs(), Some(120));
        assert_eq!(LimitError::StoreUnavailable.retry_after_secs(), None);
    }
}
