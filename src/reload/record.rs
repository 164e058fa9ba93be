//! What a reload leaves behind: the log line, the metrics and the PCI DSS 10.2.1 record
//! in the audit chain (`config.reloaded` / `config.reload_refused`). Never a secret value:
//! only section and key names, the masked config's hash, and the refusal's message, which
//! names the key and the fix.

use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;

use crate::audit::{AuditLog, KeyId, ReloadTrigger, SystemEvent};
use crate::config::{Config, UpstreamAuth};
use crate::metrics::ReloadMetrics;

/// The metrics of a config now serving (at start and after each successful reload).
pub(super) fn serving(metrics: &ReloadMetrics, config: &Config, not_after: Option<i64>) {
    metrics.last_success.set(unix_now());
    if let Some(t) = not_after {
        metrics.certificate_not_after.set(t);
    }
    metrics.set_config_hash(&config.hash());
}

pub(super) async fn reloaded(
    metrics: &ReloadMetrics,
    audit: &AuditLog,
    config: &Config,
    changed: Vec<&'static str>,
    trigger: ReloadTrigger,
) {
    metrics.counted("ok");
    let config_hash = config.hash();
    tracing::info!(
        trigger = name(trigger),
        changed = ?changed,
        config_hash = &config_hash[..16],
        "config reloaded"
    );
    let event = SystemEvent::ConfigReloaded {
        config_hash,
        changed,
        trigger,
    };
    write(audit, event).await;
}

pub(super) async fn refused(
    metrics: &ReloadMetrics,
    audit: &AuditLog,
    reason: String,
    trigger: ReloadTrigger,
) {
    metrics.counted("refused");
    tracing::error!(
        trigger = name(trigger),
        reason = %reason,
        "reload refused, still serving with the last good config"
    );
    write(audit, SystemEvent::ReloadRefused { reason, trigger }).await;
}

/// A `key.rotated` record for each key other than the chain's own that a reload
/// replaced (the chain's writes its own, `audit.key_rotated`): named by id, never by value.
pub(super) async fn keys_rotated(audit: &AuditLog, old: &Config, new: &Config) {
    let pairs = [
        (
            "auth.session_key",
            old.auth
                .session_key
                .as_ref()
                .map(|k| KeyId::of(k.expose_secret())),
            new.auth
                .session_key
                .as_ref()
                .map(|k| KeyId::of(k.expose_secret())),
        ),
        (
            "upstream.auth.token",
            upstream_token(&old.upstream.auth),
            upstream_token(&new.upstream.auth),
        ),
        (
            "upstream.auth.client_secret",
            client_secret(&old.upstream.auth),
            client_secret(&new.upstream.auth),
        ),
    ];
    for (key, before, after) in pairs {
        if let (Some(old_id), Some(new_id)) = (before, after)
            && old_id != new_id
        {
            let event = SystemEvent::KeyRotated {
                key,
                old_key_id: old_id.to_string(),
                new_key_id: new_id.to_string(),
            };
            write(audit, event).await;
        }
    }
}

fn upstream_token(auth: &UpstreamAuth) -> Option<KeyId> {
    match auth {
        UpstreamAuth::Static(t) => Some(KeyId::of(t.expose_secret().as_bytes())),
        _ => None,
    }
}

fn client_secret(auth: &UpstreamAuth) -> Option<KeyId> {
    match auth {
        UpstreamAuth::ClientCredentials { client_secret, .. } => {
            Some(KeyId::of(client_secret.expose_secret().as_bytes()))
        }
        _ => None,
    }
}

/// A log that cannot take the record is already unhealthy (payments refused, `/readyz`
/// failing): logged, and the reload's outcome stands.
async fn write(audit: &AuditLog, event: SystemEvent) {
    if let Err(e) = audit.system_event(event).await {
        tracing::error!(error = %e, "audit log: the reload record was not written");
    }
}

pub(super) fn name(trigger: ReloadTrigger) -> &'static str {
    match trigger {
        ReloadTrigger::Signal => "signal",
        ReloadTrigger::FileChange => "file_change",
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
