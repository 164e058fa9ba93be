//! Rate-limited logging for the limiter's own warnings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets a log line through at most once per interval (cap warnings under attack).
pub(super) struct LogEvery {
    epoch: Instant,
    every_ns: u64,
    /// Nanoseconds since `epoch` of the last line, plus one (0 = never).
    last: AtomicU64,
}

impl LogEvery {
    pub(super) fn new(every: Duration) -> Self {
        LogEvery {
            epoch: Instant::now(),
            every_ns: u64::try_from(every.as_nanos()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
        }
    }

    pub(super) fn ready(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.every_ns {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_every_limits_lines() {
        let log = LogEvery::new(Duration::from_secs(60));
        assert!(log.ready());
        assert!(!log.ready());
        let log = LogEvery::new(Duration::ZERO);
        assert!(log.ready());
        assert!(log.ready());
    }
}
