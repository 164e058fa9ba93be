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
    let keys: Vec<SecretString> = match raw {
        None => Vec::new(),
        Some(SecretList::List(keys)) => keys,
        Some(SecretList::Joined(joined)) => joined
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(SecretString::from)
            .collect(),
    };
    keys.iter()
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
