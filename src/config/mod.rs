//! Configuration in two stages.
//!
//! [`RawConfig`](raw::RawConfig) is what serde reads from the TOML file plus
//! `PAYSHIM__SECTION__KEY` environment overrides: strings and options, exactly as an operator
//! wrote them. [`Config`] is the validated form, built once at start-up by `TryFrom`; nothing
//! on the request path ever parses a duration, a size or an address again. Every failure names
//! the key and says what is expected, and never echoes a secret.
//!
//! One file per stage or section: `load.rs` reads the file and the environment, `raw.rs` holds
//! the serde structs, `validated.rs` the whole validated [`Config`] and its conversion, which
//! delegates to one file per section (`server.rs`, `upstream.rs`, `auth.rs`, `clients.rs`,
//! `limits.rs`, `idempotency.rs`, `audit.rs`, `log.rs`); `parse.rs` holds the value parsers they share,
//! `quota.rs` the rate quota and its parser, `print.rs` the masked printer of
//! `check-config`, `source.rs` where the config is re-read from on a reload and `diff.rs`
//! what a reload changes.

mod audit;
mod auth;
mod clients;
mod diff;
mod hash;
mod idempotency;
mod limits;
mod load;
mod log;
mod parse;
mod print;
mod quota;
mod raw;
mod server;
mod source;
mod upstream;
mod validated;

pub use self::audit::AuditConfig;
pub use self::auth::AuthConfig;
pub use self::clients::ClientConfig;
pub use self::diff::ConfigDiff;
pub use self::idempotency::IdempotencyConfig;
pub use self::limits::{LimitsConfig, OnStoreError};
pub use self::load::{from_toml, load};
pub use self::log::{LogConfig, LogFormat};
pub use self::parse::parse_size;
pub use self::quota::{Quota, parse_quota};
pub(crate) use self::raw::SecretList;
pub use self::server::{AdminConfig, ServerConfig, TlsSource};
pub use self::source::ConfigSource;
pub use self::upstream::{UpstreamAuth, UpstreamConfig, UpstreamTarget};
pub use self::validated::{Config, PaymentsConfig};

/// A configuration problem, named by its key so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ConfigError>;
