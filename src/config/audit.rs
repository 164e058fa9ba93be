//! The `[audit]` section: where the audit log goes and the key of its HMAC chain.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretSlice};

use super::parse::size;
use super::raw::RawAudit;
use super::{ConfigError, Result};

pub struct AuditConfig {
    pub path: PathBuf,
    pub key: SecretSlice<u8>,
    pub max_file_size: u64,
}

impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditConfig")
            .field("path", &self.path)
            .field("key", &"****")
            .field("max_file_size", &self.max_file_size)
            .finish()
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
    if key.expose_secret().len() < 32 {
        return Err(ConfigError::new(
            "audit.key",
            "too short: use at least 32 random characters",
        ));
    }
    Ok(AuditConfig {
        path: raw
            .path
            .unwrap_or_else(|| PathBuf::from("var/audit/payshim.jsonl")),
        key: SecretSlice::from(key.expose_secret().as_bytes().to_vec()),
        max_file_size: size("audit.max_file_size", raw.max_file_size.as_deref(), "64MiB")?,
    })
}
