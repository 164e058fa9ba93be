//! The raw form: what the file and the environment say, strings and options exactly as an
//! operator wrote them. Unknown keys are errors (`deny_unknown_fields`), so a typo is named
//! instead of silently ignored.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) admin: RawAdmin,
    pub(super) upstream: RawUpstream,
    pub(super) auth: RawAuth,
    pub(super) clients: Vec<RawClient>,
    pub(super) routes: Vec<RawRoute>,
    pub(super) limits: RawLimits,
    pub(super) audit: RawAudit,
    pub(super) log: RawLog,
    pub(super) payments: RawPayments,
    pub(super) idempotency: RawIdempotency,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) dev_cert_dir: Option<PathBuf>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_ip: Option<usize>,
    pub(super) max_header_size: Option<String>,
    pub(super) max_h2_streams: Option<u32>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) workers: Option<usize>,
    pub(super) reload_check_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    pub(super) url: Option<String>,
    pub(super) ca: Option<PathBuf>,
    pub(super) connect_timeout: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) pool_idle_timeout: Option<String>,
    pub(super) pool_max_idle: Option<usize>,
    pub(super) auth: RawUpstreamAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstreamAuth {
    pub(super) token: Option<SecretString>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    pub(super) session_key: Option<SecretString>,
    pub(super) session_ttl: Option<String>,
    pub(super) previous_session_keys: Option<SecretList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawClient {
    pub(super) id: String,
    pub(super) public_id: Option<String>,
    pub(super) allowed_origins: Vec<String>,
    pub(super) api_key_sha256: Option<String>,
    pub(super) secret_sha256: Option<String>,
    pub(super) cert_subject: Option<String>,
    pub(super) routes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRoute {
    pub(super) method: String,
    pub(super) path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    pub(super) per_client: Option<String>,
    pub(super) per_ip: Option<String>,
    pub(super) per_order: Option<String>,
    pub(super) per_card: Option<String>,
    pub(super) card_attempts: Option<String>,
    pub(super) decline_ratio: Option<f64>,
    pub(super) decline_window: Option<u32>,
    pub(super) decline_cooldown: Option<String>,
    pub(super) max_keys: Option<usize>,
    pub(super) max_body: Option<String>,
    pub(super) redis_url: Option<String>,
    pub(super) redis_timeout: Option<String>,
    pub(super) on_store_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdempotency {
    pub(super) ttl: Option<String>,
    pub(super) max_keys: Option<usize>,
    pub(super) duplicate_window: Option<String>,
    pub(super) one_payment_per_order: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAudit {
    pub(super) path: Option<PathBuf>,
    pub(super) key: Option<SecretString>,
    pub(super) max_file_size: Option<String>,
    pub(super) previous_keys: Option<SecretList>,
    pub(super) fingerprint_key: Option<SecretString>,
}

/// A list of secrets: a TOML array, or (from the environment, which has no lists) one
/// string of comma-separated values.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SecretList {
    List(Vec<SecretString>),
    Joined(SecretString),
}

impl SecretList {
    /// The secrets, in order; empty entries of a joined string are skipped.
    pub(crate) fn secrets(list: Option<SecretList>) -> Vec<SecretString> {
        match list {
            None => Vec::new(),
            Some(SecretList::List(keys)) => keys,
            Some(SecretList::Joined(joined)) => joined
                .expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(SecretString::from)
                .collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
    pub(super) flush_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPayments {
    pub(super) gateways: Option<Vec<String>>,
    pub(super) raw_card_gateways: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn secret_lists_from_arrays_and_joined_strings() {
        // (the value as the config gives it, the secrets expected)
        let cases: Vec<(Value, &[&str])> = vec![
            (json!(["a", "b"]), &["a", "b"]),
            (json!("a,b"), &["a", "b"]),
            (json!(" a , b ,"), &["a", "b"]),
            (json!(""), &[]),
            (json!([]), &[]),
        ];
        for (value, want) in cases {
            let list: SecretList = serde_json::from_value(value.clone()).unwrap();
            let got: Vec<String> = SecretList::secrets(Some(list))
                .iter()
                .map(|k| k.expose_secret().to_owned())
                .collect();
            assert_eq!(got, want, "{value}");
        }
        assert!(SecretList::secrets(None).is_empty());
    }
}
