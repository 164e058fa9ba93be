//! What a reload changes: the sections that differ between the running config and the
//! new one, and the changed keys that cannot take effect without a restart.
//!
//! Compared on the masked form `check-config` prints (one line per key), plus the secrets
//! themselves, which that form masks. Nothing here ever holds or returns a secret value,
//! only key and section names. README.md, "Operations", lists what reloads.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::{Config, TlsSource, UpstreamAuth};

/// The keys that a reload applies to the running process. Every other key needs a
/// restart; a reload that changes one is refused.
const LIVE_KEYS: &[&str] = &[
    "server.cert",
    "server.key",
    "server.client_ca",
    "server.reload_check_interval",
    "upstream.auth.token",
    "upstream.auth.client_id",
    "upstream.auth.client_secret",
    "auth.session_key",
    "auth.session_ttl",
    "auth.previous_session_keys",
    "clients",
    "routes",
    "limits.per_client",
    "limits.per_ip",
    "limits.per_order",
    "limits.per_card",
    "limits.card_attempts",
    "limits.decline_ratio",
    "limits.decline_window",
    "limits.decline_cooldown",
    "log.level",
];

/// Live only when the audit log can rotate its chain key (see `ConfigDiff::not_live`).
const AUDIT_KEYS: &[&str] = &["audit.key", "audit.previous_keys"];

/// Compared by value in [`secrets_equal`], not by their printed (masked) lines.
const BY_VALUE: &[&str] = &[
    "audit.previous_keys",
    "audit.fingerprint_key",
    "auth.previous_session_keys",
];

/// How a new config differs from the running one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Changed keys, sorted (`clients` and `routes` stand for their whole lists).
    pub changed: Vec<String>,
}

impl ConfigDiff {
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let (a, b) = (keyed_lines(old), keyed_lines(new));
        let mut changed: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect();
        for (key, same) in secrets_equal(old, new) {
            if !same {
                changed.push(key.to_string());
            }
        }
        changed.sort();
        changed.dedup();
        ConfigDiff { changed }
    }

    /// The changed keys that need a restart (`audit.key` is live only when the audit
    /// log can rotate its key).
    pub fn not_live(&self, audit_key_live: bool) -> Vec<&str> {
        self.changed
            .iter()
            .map(String::as_str)
            .filter(|k| {
                let live = LIVE_KEYS.contains(k) || (audit_key_live && AUDIT_KEYS.contains(k));
                !live
            })
            .collect()
    }

    /// The changed sections (`server`, `clients`, `limits`, ...), for the log and the
    /// audit record.
    pub fn sections(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self.changed.iter().map(|k| section(k)).collect();
        out.dedup();
        out
    }

    pub fn touches(&self, prefix: &str) -> bool {
        self.changed.iter().any(|k| k.starts_with(prefix))
    }
}

/// The section of a key, as a static name for audit records.
fn section(key: &str) -> &'static str {
    const SECTIONS: &[&str] = &[
        "server",
        "admin",
        "upstream",
        "auth",
        "clients",
        "routes",
        "limits",
        "idempotency",
        "audit",
        "log",
        "payments",
    ];
    let head = key.split(['.', '[']).next().unwrap_or(key);
    SECTIONS
        .iter()
        .find(|s| **s == head)
        .copied()
        .unwrap_or("other")
}

/// `section.key -> printed value` from the masked printer; the `[[clients]]` and
/// `[[routes]]` lists each become one entry holding all their lines.
fn keyed_lines(config: &Config) -> BTreeMap<String, String> {
    let text = config.to_string();
    let mut out = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_matches(['[', ']']).to_string();
            continue;
        }
        if section == "clients" || section == "routes" {
            let entry: &mut String = out.entry(section.clone()).or_default();
            entry.push_str(line);
            entry.push('\n');
            continue;
        }
        if let Some((key, value)) = line.split_once(" = ") {
            let key = format!("{section}.{key}");
            if !BY_VALUE.contains(&key.as_str()) {
                out.insert(key, value.to_string());
            }
        }
    }
    out
}

/// What the printer masks or leaves out, compared in memory: `(key, equal)`.
fn secrets_equal(old: &Config, new: &Config) -> Vec<(&'static str, bool)> {
    let (a, b) = (
        upstream_secrets(&old.upstream.auth),
        upstream_secrets(&new.upstream.auth),
    );
    let (pa, pb) = (
        &old.auth.previous_session_keys,
        &new.auth.previous_session_keys,
    );
    vec![
        ("upstream.auth.token", same_opt_str(a.0, b.0)),
        ("upstream.auth.client_secret", same_opt_str(a.1, b.1)),
        (
            "auth.session_key",
            match (&old.auth.session_key, &new.auth.session_key) {
                (Some(x), Some(y)) => same(x, y),
                (x, y) => x.is_none() == y.is_none(),
            },
        ),
        ("auth.previous_session_keys", same_list(pa, pb)),
        ("audit.key", same(&old.audit.key, &new.audit.key)),
        (
            "audit.previous_keys",
            same_list(&old.audit.previous_keys, &new.audit.previous_keys),
        ),
        (
            "audit.fingerprint_key",
            same(&old.audit.fingerprint_key, &new.audit.fingerprint_key),
        ),
        (
            "clients",
            old.clients
                .iter()
                .map(|c| c.secret_sha256)
                .eq(new.clients.iter().map(|c| c.secret_sha256)),
        ),
        (
            "limits.redis_url",
            old.limits.redis_url == new.limits.redis_url,
        ),
        (
            "server.dev_cert_dir",
            same_dev_dir(&old.server.tls, &new.server.tls),
        ),
    ]
}

/// The printer shows the dev certificate's directory only in a comment. Switching
/// between the dev certificate and real files is a change of `server.cert` / `server.key`.
fn same_dev_dir(a: &TlsSource, b: &TlsSource) -> bool {
    match (a, b) {
        (TlsSource::DevSelfSigned { dir: x }, TlsSource::DevSelfSigned { dir: y }) => x == y,
        _ => true,
    }
}

/// The static token and the client secret, whichever is configured.
fn upstream_secrets(auth: &UpstreamAuth) -> (Option<&SecretString>, Option<&SecretString>) {
    match auth {
        UpstreamAuth::Static(t) => (Some(t), None),
        UpstreamAuth::ClientCredentials { client_secret, .. } => (None, Some(client_secret)),
        UpstreamAuth::None => (None, None),
    }
}

fn same_opt_str(a: Option<&SecretString>, b: Option<&SecretString>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x.expose_secret() == y.expose_secret(),
        (x, y) => x.is_none() == y.is_none(),
    }
}

fn same(a: &SecretSlice<u8>, b: &SecretSlice<u8>) -> bool {
    a.expose_secret() == b.expose_secret()
}

fn same_list(a: &[SecretSlice<u8>], b: &[SecretSlice<u8>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::from_toml;

    const BASE: &str = r#"
        [upstream]
        url = "sandbox"
        [auth]
        session_key = "0123456789abcdef0123456789abcdef-one"
        [audit]
        key = "0123456789abcdef0123456789abcdef-audit"
        [[clients]]
        id = "shop"
        api_key_sha256 = "5bb0a8d2f0e1d0fbd5d0d4f1b0b3f4b7d5c8e0f3a6b9c2d5e8f1a4b7c0d3e6f9"
    "#;

    fn diff(extra: &str) -> ConfigDiff {
        let env = HashMap::new();
        let old = from_toml(BASE, &env).unwrap();
        let new = from_toml(&format!("{BASE}\n{extra}"), &env).unwrap();
        ConfigDiff::between(&old, &new)
    }

    #[test]
    fn the_same_config_changes_nothing() {
        assert_eq!(diff(""), ConfigDiff::default());
    }

    #[test]
    fn live_and_not_live_keys() {
        let d = diff("[[clients]]\nid = \"other\"\npublic_id = \"pk\"\n[log]\nlevel = \"debug\"");
        assert_eq!(d.changed, ["clients", "log.level"]);
        assert!(d.not_live(false).is_empty());
        assert_eq!(d.sections(), ["clients", "log"]);
        let d = diff("[server]\nlisten = \"127.0.0.1:9443\"\nworkers = 2");
        assert_eq!(d.not_live(false), ["server.listen", "server.workers"]);
    }

    #[test]
    fn masked_secrets_are_compared_too() {
        let env = HashMap::new();
        let old = from_toml(BASE, &env).unwrap();
        let rotated = BASE.replace("abcdef-one", "abcdef-two");
        let new = from_toml(&rotated, &env).unwrap();
        let d = ConfigDiff::between(&old, &new);
        assert_eq!(d.changed, ["auth.session_key"]);
        let new = from_toml(&BASE.replace("-audit", "-audit2"), &env).unwrap();
        let d = ConfigDiff::between(&old, &new);
        // Unpinned, the fingerprint key follows audit.key: card fingerprints would change.
        assert_eq!(d.not_live(false), ["audit.fingerprint_key", "audit.key"]);
        assert_eq!(d.not_live(true), ["audit.fingerprint_key"]);
        // The documented rotation: the old key pinned as the fingerprint key and kept as
        // a previous key; only the fingerprint key's value counts, not its line.
        let old_key = "\"0123456789abcdef0123456789abcdef-audit\"";
        let rotation = format!(
            "fingerprint_key = {old_key}\nprevious_keys = [{old_key}]\nkey = \"0123456789abcdef0123456789abcdef-audit2\""
        );
        let rotated = BASE.replace(
            "key = \"0123456789abcdef0123456789abcdef-audit\"",
            &rotation,
        );
        let new = from_toml(&rotated, &env).unwrap();
        let d = ConfigDiff::between(&old, &new);
        assert_eq!(d.changed, ["audit.key", "audit.previous_keys"]);
        assert!(d.not_live(true).is_empty());
    }
}
