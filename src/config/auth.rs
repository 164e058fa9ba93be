//! The `[auth]` section: the session key and lifetime of the storefront token exchange.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice};

use super::parse::duration;
use super::raw::RawAuth;
use super::{ConfigError, Result};

pub struct AuthConfig {
    pub session_key: Option<SecretSlice<u8>>,
    pub session_ttl: Duration,
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
            .finish()
    }
}

pub(super) fn auth_config(raw: RawAuth) -> Result<AuthConfig> {
    let session_key = match raw.session_key {
        Some(k) if k.expose_secret().len() < 32 => {
            return Err(ConfigError::new(
                "auth.session_key",
                "too short: use at least 32 random characters (e.g. `openssl rand -hex 32`)",
            ));
        }
        Some(k) => Some(SecretSlice::from(k.expose_secret().as_bytes().to_vec())),
        None => None,
    };
    Ok(AuthConfig {
        session_key,
        session_ttl: duration("auth.session_ttl", raw.session_ttl.as_deref(), "1h")?,
    })
}
