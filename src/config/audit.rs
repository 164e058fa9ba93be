//! The `[audit]` section: where the audit log goes, the key of its HMAC chain (and the
//! keys it had before a rotation), and the key of card fingerprints.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::parse::size;
use super::raw::{RawAudit, SecretList};
use super::{ConfigError, Result};

/// The shortest key accepted for `audit.key`, `audit.previous_keys` and
/// `audit.fingerprint_key`.
const MIN_KEY_LEN: usize = 32;

pub struct AuditConfig {
    pub path: PathBuf,
    /// Signs the chain.
    pub key: SecretSlice<u8>,
    /// Keys the chain was signed with before `key` (rotation across a restart): the
    /// writer continues a chain whose last record one of them signed.
    pub previous_keys: Vec<SecretSlice<u8>>,
    /// Keys card fingerprints, per-card limits and idempotency fingerprints: never the
    /// chain key's successor, so rotating the chain key keeps them continuous.
    pub fingerprint_key: SecretSlice<u8>,
    /// `audit.fingerprint_key` was not set: `fingerprint_key` is `audit.key`'s value.
    pub fingerprint_key_defaulted: bool,
    pub max_file_size: u64,
}

impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditConfig")
            .field("path", &self.path)
            .field("key", &"****")
            .field("previous_keys", &self.previous_keys.len())
            .field("fingerprint_key", &"****")
            .field("fingerprint_key_defaulted", &self.fingerprint_key_defaulted)
            .field("max_file_size", &self.max_file_size)
            .finish()
    }
}

impl AuditConfig {
    /// Why the config is weaker than it could be, for `check-config` and the start-up log.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.fingerprint_key_defaulted {
            out.push(
                "audit.fingerprint_key is not set: card fingerprints and per-card limits are \
                 keyed with audit.key; set audit.fingerprint_key to audit.key's current value \
                 before rotating audit.key, or they change with it",
            );
        }
        out
    }
}

pub(super) fn audit_config(raw: RawAudit) -> Result<AuditConfig> {
    let key = raw.key.ok_or_else(|| {
        ConfigError::new(
            "audit.key",
            "missing: set a random HMAC key of at least 32 characters \
             (e.g. PAYSHIM__AUDIT__KEY=$(openssl rand -hex 32))",
        )
    })?;
    let key = checked("audit.key", &key)?;
    let previous_keys = previous_keys(raw.previous_keys)?;
    let fingerprint_key = raw
        .fingerprint_key
        .map(|k| checked("audit.fingerprint_key", &k))
        .transpose()?;
    if fingerprint_key.is_none() && !previous_keys.is_empty() {
        return Err(ConfigError::new(
            "audit.fingerprint_key",
            "missing while audit.previous_keys is set: the chain key was rotated, so set \
             audit.fingerprint_key to the audit.key value used before the first rotation, \
             or card fingerprints and per-card limits lose their history",
        ));
    }
    Ok(AuditConfig {
        path: raw
            .path
            .unwrap_or_else(|| PathBuf::from("var/audit/payshim.jsonl")),
        fingerprint_key_defaulted: fingerprint_key.is_none(),
        fingerprint_key: fingerprint_key.unwrap_or_else(|| key.clone()),
        key,
        previous_keys,
        max_file_size: size("audit.max_file_size", raw.max_file_size.as_deref(), "64MiB")?,
    })
}

fn previous_keys(raw: Option<SecretList>) -> Result<Vec<SecretSlice<u8>>> {
    SecretList::secrets(raw)
        .iter()
        .enumerate()
        .map(|(i, k)| checked(&format!("audit.previous_keys[{i}]"), k))
        .collect()
}

fn checked(name: &str, key: &SecretString) -> Result<SecretSlice<u8>> {
    if key.expose_secret().len() < MIN_KEY_LEN {
        return Err(ConfigError::new(
            name,
            "too short: use at least 32 random characters",
        ));
    }
    Ok(SecretSlice::from(key.expose_secret().as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const AUDIT_KEY: &str = "audit-key-0123456789abcdef0123456789abcd";
    const OLD_KEY: &str = "old-audit-key-0123456789abcdef0123456789";
    const PRINT_KEY: &str = "fingerprint-key-0123456789abcdef01234567";

    fn load(audit: &str, env: &[(&str, &str)]) -> Result<AuditConfig> {
        let toml =
            format!("[upstream]\nurl = \"sandbox\"\n[audit]\nkey = \"{AUDIT_KEY}\"\n{audit}");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::from_toml(&toml, &env).map(|c| c.audit)
    }

    #[test]
    fn the_fingerprint_key_defaults_to_the_audit_key_with_a_warning() {
        let audit = load("", &[]).unwrap();
        assert!(audit.fingerprint_key_defaulted);
        assert_eq!(audit.fingerprint_key.expose_secret(), AUDIT_KEY.as_bytes());
        assert!(audit.previous_keys.is_empty());
        assert_eq!(audit.warnings().len(), 1);

        let audit = load("", &[("PAYSHIM__AUDIT__FINGERPRINT_KEY", PRINT_KEY)]).unwrap();
        assert!(!audit.fingerprint_key_defaulted);
        assert_eq!(audit.fingerprint_key.expose_secret(), PRINT_KEY.as_bytes());
        assert!(audit.warnings().is_empty());

        let err = load("fingerprint_key = \"short\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "audit.fingerprint_key");
    }

    #[test]
    fn previous_keys_need_the_fingerprint_key_and_come_from_a_list_or_the_env() {
        let err = load(&format!("previous_keys = [\"{OLD_KEY}\"]\n"), &[]).unwrap_err();
        assert_eq!(err.key, "audit.fingerprint_key");
        assert!(!err.to_string().contains(OLD_KEY), "{err}");

        let audit = load(
            &format!("previous_keys = [\"{OLD_KEY}\"]\nfingerprint_key = \"{OLD_KEY}\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(audit.previous_keys.len(), 1);
        assert_eq!(audit.previous_keys[0].expose_secret(), OLD_KEY.as_bytes());

        let joined = format!("{OLD_KEY},{PRINT_KEY}");
        let audit = load(
            "",
            &[
                ("PAYSHIM__AUDIT__PREVIOUS_KEYS", &joined),
                ("PAYSHIM__AUDIT__FINGERPRINT_KEY", OLD_KEY),
            ],
        )
        .unwrap();
        assert_eq!(audit.previous_keys.len(), 2);
        assert_eq!(audit.previous_keys[1].expose_secret(), PRINT_KEY.as_bytes());

        let err = load(
            &format!(
                "previous_keys = [\"{OLD_KEY}\", \"short\"]\nfingerprint_key = \"{OLD_KEY}\"\n"
            ),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key, "audit.previous_keys[1]");
    }

    #[test]
    fn check_config_masks_the_new_keys() {
        let toml = format!(
            "[upstream]\nurl = \"sandbox\"\n[audit]\nkey = \"{AUDIT_KEY}\"\n\
             previous_keys = [\"{OLD_KEY}\"]\nfingerprint_key = \"{PRINT_KEY}\"\n"
        );
        let printed = crate::config::from_toml(&toml, &HashMap::new())
            .unwrap()
            .to_string();
        for secret in [AUDIT_KEY, OLD_KEY, PRINT_KEY] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("previous_keys = [\"****\"]"), "{printed}");
        assert!(printed.contains("fingerprint_key = \"****\""), "{printed}");
    }
}
