//! System events in the chain (PCI DSS 10.2.1): start, clean stop, config reloaded, reload
//! refused, key rotated. They are chained and signed like the payment records, so an
//! auditor sees from the log alone when the proxy ran and with which configuration.
//!
//! A system record holds no secret: the config appears only as its hash over the masked
//! form `check-config` prints, keys only by their [`KeyId`](super::KeyId), and a refusal
//! reason is written by payshim itself, naming the key, never its value.

use serde::Serialize;

use super::record::AuditEvent;

/// What made the proxy reload its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// A watched file changed.
    FileChange,
}

/// A system event for [`AuditLog::system_event`](super::AuditLog::system_event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemEvent {
    /// The proxy started: its version and `Config::hash()`.
    Started {
        version: String,
        config_hash: String,
    },
    /// The proxy stopped cleanly, after draining its requests.
    Stopped,
    /// A new config took effect: its hash and the sections (`server`, `clients`, …) that
    /// changed.
    ConfigReloaded {
        config_hash: String,
        changed: Vec<&'static str>,
        trigger: ReloadTrigger,
    },
    /// A new config was refused; the running one stays. `reason` names the key and the
    /// fix, never a secret value.
    ReloadRefused {
        reason: String,
        trigger: ReloadTrigger,
    },
    /// A key other than the chain's own (e.g. `auth.session_key`) was replaced. The
    /// chain's key is rotated with [`AuditLog::rotate_key`](super::AuditLog::rotate_key),
    /// which writes `audit.key_rotated` itself.
    KeyRotated {
        /// The config key, e.g. `auth.session_key`.
        key: &'static str,
        old_key_id: String,
        new_key_id: String,
    },
}

/// A system event as written: the event name, then only the fields it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct SystemRecord {
    pub event: AuditEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<ReloadTrigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_key_id: Option<String>,
}

impl SystemRecord {
    fn empty(event: AuditEvent) -> SystemRecord {
        SystemRecord {
            event,
            version: None,
            config_hash: None,
            changed: None,
            trigger: None,
            reason: None,
            key: None,
            old_key_id: None,
            new_key_id: None,
        }
    }

    /// The record of the chain's own key switching from `old` to `new` (ids).
    pub(super) fn chain_key_rotated(old: &str, new: &str) -> SystemRecord {
        SystemRecord {
            key: Some("audit.key"),
            old_key_id: Some(old.to_owned()),
            new_key_id: Some(new.to_owned()),
            ..SystemRecord::empty(AuditEvent::AuditKeyRotated)
        }
    }
}

impl From<SystemEvent> for SystemRecord {
    fn from(event: SystemEvent) -> SystemRecord {
        match event {
            SystemEvent::Started {
                version,
                config_hash,
            } => SystemRecord {
                version: Some(version),
                config_hash: Some(config_hash),
                ..SystemRecord::empty(AuditEvent::SystemStarted)
            },
            SystemEvent::Stopped => SystemRecord::empty(AuditEvent::SystemStopped),
            SystemEvent::ConfigReloaded {
                config_hash,
                changed,
                trigger,
            } => SystemRecord {
                config_hash: Some(config_hash),
                changed: Some(changed),
                trigger: Some(trigger),
                ..SystemRecord::empty(AuditEvent::ConfigReloaded)
            },
            SystemEvent::ReloadRefused { reason, trigger } => SystemRecord {
                reason: Some(reason),
                trigger: Some(trigger),
                ..SystemRecord::empty(AuditEvent::ConfigReloadRefused)
            },
            SystemEvent::KeyRotated {
                key,
                old_key_id,
                new_key_id,
            } => SystemRecord {
                key: Some(key),
                old_key_id: Some(old_key_id),
                new_key_id: Some(new_key_id),
                ..SystemRecord::empty(AuditEvent::KeyRotated)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_hold_only_their_own_fields() {
        let started = SystemRecord::from(SystemEvent::Started {
            version: "1.2.3".into(),
            config_hash: "ab".into(),
        });
        assert_eq!(
            serde_json::to_string(&started).unwrap(),
            r#"{"event":"system.started","version":"1.2.3","config_hash":"ab"}"#
        );
        assert_eq!(
            serde_json::to_string(&SystemRecord::from(SystemEvent::Stopped)).unwrap(),
            r#"{"event":"system.stopped"}"#
        );
        let reloaded = SystemRecord::from(SystemEvent::ConfigReloaded {
            config_hash: "cd".into(),
            changed: vec!["clients", "server"],
            trigger: ReloadTrigger::FileChange,
        });
        assert_eq!(
            serde_json::to_string(&reloaded).unwrap(),
            r#"{"event":"config.reloaded","config_hash":"cd","changed":["clients","server"],"trigger":"file_change"}"#
        );
        let refused = SystemRecord::from(SystemEvent::ReloadRefused {
            reason: "config key `server.listen`: not live".into(),
            trigger: ReloadTrigger::Signal,
        });
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"event":"config.reload_refused","trigger":"signal","reason":"config key `server.listen`: not live"}"#
        );
        assert_eq!(
            serde_json::to_string(&SystemRecord::chain_key_rotated("aa", "bb")).unwrap(),
            r#"{"event":"audit.key_rotated","key":"audit.key","old_key_id":"aa","new_key_id":"bb"}"#
        );
    }
}
