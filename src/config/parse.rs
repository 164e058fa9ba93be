//! Value parsers shared by the sections: addresses, durations, sizes. Each failure names the
//! key and shows the expected form. Quotas have their own file, `quota.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

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
}
