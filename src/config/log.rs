//! The `[log]` section: format, level filter and batching of log lines.

use std::time::Duration;

use super::raw::RawLog;
use super::{ConfigError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    /// The config value, as `check-config` prints it back.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        }
    }
}

#[derive(Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// How long log lines may wait in memory to be written in one batch; zero writes
    /// each line as it is logged.
    pub flush_interval: Duration,
    /// Not a key: set when `upstream.url = "sandbox"`, so that every line says so and a
    /// sandbox log can never pass for a real one.
    pub sandbox: bool,
}

pub(super) fn log_config(raw: RawLog) -> Result<LogConfig> {
    let format = match raw.format.as_deref().unwrap_or("json") {
        "json" => LogFormat::Json,
        "pretty" => LogFormat::Pretty,
        _ => {
            return Err(ConfigError::new(
                "log.format",
                "expected \"json\" or \"pretty\"",
            ));
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(ConfigError::new(
            "log.level",
            "expected a level (error, warn, info, debug, trace) or a filter like \"payshim=debug\"",
        ));
    }
    let flush = raw.flush_interval.as_deref().unwrap_or(DEFAULT_LOG_FLUSH);
    let flush_interval = match humantime::parse_duration(flush) {
        Ok(d) if d <= Duration::from_secs(10) => d,
        _ => {
            return Err(ConfigError::new(
                "log.flush_interval",
                format!(
                    "{flush:?}: expected a duration up to \"10s\", e.g. \"100ms\", or \"0s\" to write each line at once"
                ),
            ));
        }
    };
    Ok(LogConfig {
        format,
        level,
        flush_interval,
        sandbox: false,
    })
}

/// Long enough to batch hundreds of request lines at load, short enough that nobody
/// watching the log notices.
const DEFAULT_LOG_FLUSH: &str = "100ms";
