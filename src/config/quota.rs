//! A rate quota (`"50/s"`, `"5/h burst 10"`): the value type and its parser, together in a
//! leaf file so that `limits.rs`, which applies quotas, and `parse.rs`, which holds the other
//! value parsers, never import each other.

use std::time::Duration;

/// A GCRA quota: `count` requests per `period`, with `burst` allowed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
}

/// Parses "50/s", "5/10min", "5/h", "100/min burst 20".
pub fn parse_quota(s: &str) -> Result<Quota, String> {
    let bad = || {
        format!(
            "{s:?} is not a quota; expected e.g. \"50/s\", \"5/10min\", \"5/h burst 10\" or \"off\""
        )
    };
    let (rate, burst) = match s.split_once("burst") {
        Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
        None => (s.trim(), None),
    };
    let (count, period) = rate.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        humantime::parse_duration(period).map_err(|_| bad())?
    } else {
        humantime::parse_duration(&format!("1{period}")).map_err(|_| bad())?
    };
    let burst = match burst {
        Some(b) => b.parse().map_err(|_| bad())?,
        None => count,
    };
    if count == 0 || burst == 0 || period.is_zero() {
        return Err(bad());
    }
    Ok(Quota {
        count,
        period,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas() {
        let q = parse_quota("5/10min").unwrap();
        assert_eq!(
            (q.count, q.period, q.burst),
            (5, Duration::from_secs(600), 5)
        );
        let q = parse_quota("50/s burst 100").unwrap();
        assert_eq!(
            (q.count, q.period, q.burst),
            (50, Duration::from_secs(1), 100)
        );
        assert_eq!(
            parse_quota("5/h").unwrap().period,
            Duration::from_secs(3600)
        );
        for bad in ["5", "x/s", "0/s", "5/parsec", "5/s burst x"] {
            assert!(parse_quota(bad).is_err(), "{bad}");
        }
    }
}
