//! The `[[clients]]` tables: the storefronts allowed to use payshim and their credentials.

use std::collections::HashSet;

use crate::route::RouteName;

use super::auth::AuthConfig;
use super::raw::RawClient;
use super::{ConfigError, Result};

/// One storefront allowed to use payshim.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub id: String,
    pub public_id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub api_key_sha256: Option<[u8; 32]>,
    pub secret_sha256: Option<[u8; 32]>,
    pub cert_subject: Option<String>,
    /// `None`: every route.
    pub routes: Option<Vec<RouteName>>,
}

pub(super) fn clients_config(raw: Vec<RawClient>, auth: &AuthConfig) -> Result<Vec<ClientConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("clients[{i}].{field}");
        if c.id.is_empty()
            || !c
                .id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(ConfigError::new(
                key("id"),
                "expected a non-empty name of letters, digits, '-', '_' or '.'",
            ));
        }
        if !seen.insert(c.id.clone()) {
            return Err(ConfigError::new(
                key("id"),
                format!(
                    "duplicate client id {:?}: each client needs its own id",
                    c.id
                ),
            ));
        }
        for (j, origin) in c.allowed_origins.iter().enumerate() {
            validate_origin(&key(&format!("allowed_origins[{j}]")), origin)?;
        }
        let api_key_sha256 = c
            .api_key_sha256
            .as_deref()
            .map(|h| sha256_hex(&key("api_key_sha256"), h))
            .transpose()?;
        let secret_sha256 = c
            .secret_sha256
            .as_deref()
            .map(|h| sha256_hex(&key("secret_sha256"), h))
            .transpose()?;
        if api_key_sha256.is_none()
            && secret_sha256.is_none()
            && c.public_id.is_none()
            && c.cert_subject.is_none()
        {
            return Err(ConfigError::new(
                key("api_key_sha256"),
                "the client has no credential: set api_key_sha256 (see `payshim hash-key`), \
                 public_id, secret_sha256 or cert_subject",
            ));
        }
        if (c.public_id.is_some() || secret_sha256.is_some()) && auth.session_key.is_none() {
            return Err(ConfigError::new(
                "auth.session_key",
                format!(
                    "missing: client {:?} uses the token exchange (public_id or secret_sha256), \
                     which needs a session key (PAYSHIM__AUTH__SESSION_KEY)",
                    c.id
                ),
            ));
        }
        let routes = c
            .routes
            .map(|names| {
                names
                    .iter()
                    .map(|n| {
                        RouteName::parse(n).ok_or_else(|| {
                            ConfigError::new(
                                key("routes"),
                                format!(
                                    "unknown route name {n:?}; expected one of {}",
                                    RouteName::ALL_NAMES.join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        out.push(ClientConfig {
            id: c.id,
            public_id: c.public_id,
            allowed_origins: c.allowed_origins,
            api_key_sha256,
            secret_sha256,
            cert_subject: c.cert_subject,
            routes,
        });
    }
    Ok(out)
}

/// An origin is `scheme://host[:port]` exactly as a browser sends it; never `*`.
fn validate_origin(key: &str, origin: &str) -> Result<()> {
    let bad = || {
        ConfigError::new(
            key,
            format!(
                "{origin:?} is not an origin; expected e.g. \"https://shop.example\" (no path, no wildcard)"
            ),
        )
    };
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "https" | "http")
        || rest.is_empty()
        || rest.contains(['/', '*', ' ', '?', '#'])
    {
        return Err(bad());
    }
    Ok(())
}

fn sha256_hex(key: &str, value: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value.trim(), &mut out).map_err(|_| {
        ConfigError::new(
            key,
            "expected 64 hex characters (SHA-256); make one with `payshim hash-key`",
        )
    })?;
    Ok(out)
}
