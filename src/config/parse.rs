//! Value parsers shared by the sections: addresses, durations, sizes, quotas. Each failure
//! names the key and shows the expected form.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::limits::Quota;
use super::{ConfigError, Result};

pub(super) fn socket_addr(key: &str, value: Option<&str>, default: &str) -> Result<SocketAddr> {
    let v = value.unwrap_or(default);
    v.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{v:?} is not a socket address; expected e.g. \"127.0.0.1:8443\""),
        )
    })
}

pub(super) fn duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration> {
    let v = value.unwrap_or(default);
    match humantime::parse_duration(v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::new(
            key,
            format!("{v:?} is not a duration; expected e.g. \"40s\", \"500ms\", \"10min\", \"1h\""),
        )),
    }
}

pub(super) fn positive<T: PartialEq + Default>(key: &str, v: T) -> Result<T> {
    if v == T::default() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(v)
}

pub(super) fn readable_file(key: &str, path: &Path) -> Result<()> {
    std::fs::File::open(path).map(|_| ()).map_err(|e| {
        ConfigError::new(
            key,
            format!(
                "cannot read {}: {e}; give the path of a PEM file",
                path.display()
            ),
        )
    })
}

pub(super) fn size(key: &str, value: Option<&str>, default: &str) -> Result<u64> {
    let v = value.unwrap_or(default);
    parse_size(v).ok_or_else(|| {
        ConfigError::new(
            key,
            format!("{v:?} is not a size; expected e.g. \"16KiB\", \"1MiB\" or a number of bytes"),
        )
    })
}

/// Parses "16384", "16KiB", "1MiB", "2GiB", "16KB", "1MB".
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&b| b > 0)
}

/// Parses "50/s", "5/10min", "5/h", "100/min burst 20".
pub fn parse_quota(s: &str) -> std::result::Result<Quota, String> {
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
    fn sizes() {
        for (input, want) in [
            ("16KiB", Some(16384)),
            ("1MiB", Some(1 << 20)),
            ("100", Some(100)),
            ("2KB", Some(2000)),
            ("0", None),
            ("12XB", None),
            ("", None),
        ] {
            assert_eq!(parse_size(input), want, "{input}");
        }
    }

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
