//! What a reload leaves behind: the log line, the metrics and (through the audit log's
//! system events) the PCI DSS 10.2.1 record. Never a secret value: only section and key
//! names, the masked config's hash and the refusal's message, which names the key.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::ReloadTrigger;
use crate::config::Config;
use crate::metrics::ReloadMetrics;

/// SHA-256 (hex) of the effective config as `check-config` prints it, every secret
/// masked, so the hash can be logged and exported.
pub(super) fn config_hash(config: &Config) -> String {
    hex::encode(Sha256::digest(config.to_string().as_bytes()))
}

/// The metrics of a config now serving (at start and after each successful reload).
pub(super) fn serving(metrics: &ReloadMetrics, config: &Config, not_after: Option<i64>) {
    metrics.last_success.set(unix_now());
    if let Some(t) = not_after {
        metrics.certificate_not_after.set(t);
    }
    metrics.set_config_hash(&config_hash(config));
}

pub(super) fn reloaded(
    metrics: &ReloadMetrics,
    config: &Config,
    sections: &[&'static str],
    trigger: ReloadTrigger,
) {
    metrics.counted("ok");
    tracing::info!(
        trigger = trigger.as_str(),
        changed = ?sections,
        config_hash = &config_hash(config)[..16],
        "config reloaded"
    );
}

pub(super) fn refused(metrics: &ReloadMetrics, reason: &str, trigger: ReloadTrigger) {
    metrics.counted("refused");
    tracing::error!(
        trigger = trigger.as_str(),
        reason,
        "reload refused, still serving with the last good config"
    );
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
