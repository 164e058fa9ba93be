//! The `[auth]` section: the session key and lifetime of the storefront token exchange.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::parse::duration;
use super::raw::{RawAuth, SecretList};
use super::{ConfigError, Result};

pub struct AuthConfig {
    pub session_key: Option<SecretSlice<u8>>,
    pub session_ttl: Duration,
    /// Keys that signed tokens before a rotation: still accepted until those tokens
    /// expire, never used to sign.
    pub previous_session_keys: Vec<SecretSlice<u8>>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "session_key",
                &self
                    .session_key
                    .as_ref()
                    .map(|_| "****")
                    .unwrap_or("(none)"),
            )
            .field("session_ttl", &humantime::format_duration(self.session_ttl))
            .field("previous_session_keys", &self.previous_session_keys.len())
            .finish()
    }
}

pub(super) fn auth_config(raw: RawAuth) -> Result<AuthConfig> {
    let session_key = raw
        .session_key
        .map(|k| checked_key("auth.session_key", &k))
        .transpose()?;
    let previous_session_keys = SecretList::secrets(raw.previous_session_keys)
        .iter()
        .enumerate()
        .map(|(i, k)| checked_key(&format!("auth.previous_session_keys[{i}]"), k))
        .collect::<Result<Vec<_>>>()?;
    if session_key.is_none() && !previous_session_keys.is_empty() {
        return Err(ConfigError::new(
            "auth.session_key",
            "auth.previous_session_keys is set but auth.session_key is not; \
             set the current key too (tokens are only ever signed with it)",
        ));
    }
    Ok(AuthConfig {
        session_key,
        session_ttl: duration("auth.session_ttl", raw.session_ttl.as_deref(), "1h")?,
        previous_session_keys,
    })
}

fn checked_key(key: &str, value: &SecretString) -> Result<SecretSlice<u8>> {
    if value.expose_secret().len() < 32 {
        return Err(ConfigError::new(
            key,
            "too short: use at least 32 random characters (e.g. `openssl rand -hex 32`)",
        ));
    }
    Ok(SecretSlice::from(value.expose_secret().as_bytes().to_vec()))
}
