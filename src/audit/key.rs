//! The audit key and log path for the offline tools (`payshim audit verify`,
//! `payshim audit pending`).
//!
//! An auditor checks a chain on another machine, holding only the audit keys: these tools
//! read nothing of the config but its `[audit]` table, so the TLS files and every other
//! secret the running proxy needs may be absent. The keys come from the `--key-file`s
//! (repeatable: one per key the chain was signed with, across rotations) if any is
//! given; else `PAYSHIM__AUDIT__KEY`, then `audit.key` in the config file, together with
//! `PAYSHIM__AUDIT__PREVIOUS_KEYS` (comma-separated), then `audit.previous_keys`. The
//! path comes from `PAYSHIM__AUDIT__PATH`, then `audit.path`, then the proxy's default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;
use serde::de::IgnoredAny;
use zeroize::Zeroizing;

use crate::config::{ConfigError, SecretList};

/// The same minimum the proxy enforces for `audit.key`.
const MIN_KEY_LEN: usize = 32;
/// The proxy's default `audit.path`.
const DEFAULT_PATH: &str = "var/audit/payshim.jsonl";

/// Where the `[audit]` table is read from.
#[derive(Debug, Clone, Copy)]
pub enum AuditToml<'a> {
    /// A config file (`--config`, or the default one).
    File(&'a Path),
    /// Config text (the embedded dev default).
    Text(&'a str),
}

/// What the offline tools need: the chain's keys and the current log file.
/// (`Debug` shows the keys as `[REDACTED]`: secrecy's own formatting.)
#[derive(Debug)]
pub struct OfflineAudit {
    /// The current file; its rotations are found next to it.
    pub path: PathBuf,
    /// Every key given; each record names the one it needs.
    pub keys: Vec<SecretSlice<u8>>,
}

/// The `[audit]` table as written; `max_file_size` and `fingerprint_key` are accepted so
/// a shop's own config can be given as it is, and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    path: Option<PathBuf>,
    key: Option<SecretString>,
    previous_keys: Option<SecretList>,
    #[serde(rename = "max_file_size")]
    _max_file_size: Option<IgnoredAny>,
    #[serde(rename = "fingerprint_key")]
    _fingerprint_key: Option<IgnoredAny>,
}

/// Only the `[audit]` table: every other table is skipped without being looked at.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuditOnly {
    audit: RawAudit,
}

/// Reads the key and path (see the module doc). `env` is passed in as a value so tests
/// never touch the process environment; only `PAYSHIM__AUDIT__KEY` and
/// `PAYSHIM__AUDIT__PATH` are looked at.
pub fn load_offline(
    toml: AuditToml<'_>,
    key_files: &[PathBuf],
    env: &HashMap<String, String>,
) -> Result<OfflineAudit, ConfigError> {
    let raw = read_audit_table(toml)?;
    let keys = if key_files.is_empty() {
        let mut keys = vec![env_or_file_key(env, raw.key)?];
        keys.extend(previous_keys(env, raw.previous_keys)?);
        keys
    } else {
        key_files
            .iter()
            .map(|file| read_key_file(file))
            .collect::<Result<_, _>>()?
    };
    let path = env
        .get("PAYSHIM__AUDIT__PATH")
        .map(PathBuf::from)
        .or(raw.path)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    Ok(OfflineAudit { path, keys })
}

/// `PAYSHIM__AUDIT__PREVIOUS_KEYS`, else `audit.previous_keys`.
fn previous_keys(
    env: &HashMap<String, String>,
    from_file: Option<SecretList>,
) -> Result<Vec<SecretSlice<u8>>, ConfigError> {
    let listed = match env.get("PAYSHIM__AUDIT__PREVIOUS_KEYS") {
        Some(joined) => Some(SecretList::Joined(SecretString::from(joined.as_str()))),
        None => from_file,
    };
    SecretList::secrets(listed)
        .iter()
        .enumerate()
        .map(|(i, k)| checked(&format!("audit.previous_keys[{i}]"), k.expose_secret()))
        .collect()
}

fn read_audit_table(toml: AuditToml<'_>) -> Result<RawAudit, ConfigError> {
    let builder = ::config::Config::builder();
    let builder = match toml {
        AuditToml::File(path) => {
            if !path.exists() {
                return Err(error(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            builder.add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        }
        AuditToml::Text(text) => {
            builder.add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
        }
    };
    let only: AuditOnly = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| error("audit", e.to_string()))?;
    Ok(only.audit)
}

fn env_or_file_key(
    env: &HashMap<String, String>,
    from_file: Option<SecretString>,
) -> Result<SecretSlice<u8>, ConfigError> {
    let key = env
        .get("PAYSHIM__AUDIT__KEY")
        .map(|k| SecretString::from(k.as_str()))
        .or(from_file)
        .ok_or_else(|| {
            error(
                "audit.key",
                "missing: give the chain's HMAC key with --key-file FILE or \
                 PAYSHIM__AUDIT__KEY, or as audit.key in --config",
            )
        })?;
    checked("audit.key", key.expose_secret())
}

/// The key file's content without its trailing line break.
fn read_key_file(file: &Path) -> Result<SecretSlice<u8>, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map(Zeroizing::new)
        .map_err(|e| error("--key-file", format!("cannot read {}: {e}", file.display())))?;
    checked("--key-file", text.trim_end_matches(['\n', '\r']))
}

fn checked(name: &str, key: &str) -> Result<SecretSlice<u8>, ConfigError> {
    if key.len() < MIN_KEY_LEN {
        return Err(error(
            name,
            "too short: the audit key has at least 32 characters",
        ));
    }
    Ok(SecretSlice::from(key.as_bytes().to_vec()))
}

fn error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "offline-audit-key-0123456789abcdef0123";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_audit_table_is_read() {
        let toml = format!(
            "[server]\ncert = \"/missing.pem\"\n[auth]\nbogus = 1\n[audit]\npath = \"/a/p.jsonl\"\nkey = \"{KEY}\"\n"
        );
        let got = load_offline(AuditToml::Text(&toml), &[], &env(&[])).unwrap();
        assert_eq!(got.path, PathBuf::from("/a/p.jsonl"));
        assert_eq!(got.keys.len(), 1);
        assert_eq!(got.keys[0].expose_secret(), KEY.as_bytes());
    }

    #[test]
    fn env_overrides_the_file_and_the_key_file_overrides_both() {
        let toml = "[audit]\nkey = \"file-key-file-key-file-key-file-key-00\"\n";
        let vars = env(&[
            ("PAYSHIM__AUDIT__KEY", KEY),
            ("PAYSHIM__AUDIT__PATH", "/env/p.jsonl"),
            ("PAYSHIM__AUTH__SESSION_KEY", "short"),
        ]);
        let got = load_offline(AuditToml::Text(toml), &[], &vars).unwrap();
        assert_eq!(got.keys.len(), 1);
        assert_eq!(got.keys[0].expose_secret(), KEY.as_bytes());
        assert_eq!(got.path, PathBuf::from("/env/p.jsonl"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "key-file-key-file-key-file-key-file-01\r\n").unwrap();
        let got = load_offline(AuditToml::Text(toml), &[file], &vars).unwrap();
        assert_eq!(got.keys.len(), 1);
        assert_eq!(
            got.keys[0].expose_secret(),
            b"key-file-key-file-key-file-key-file-01"
        );
    }

    #[test]
    fn missing_short_or_unreadable_keys_name_their_source() {
        let err = load_offline(AuditToml::Text(""), &[], &env(&[])).unwrap_err();
        assert_eq!(err.key, "audit.key");
        assert!(err.message.starts_with("missing"), "{err}");
        assert_eq!(
            load_offline(
                AuditToml::Text("[audit]\nkey = \"short\"\n"),
                &[],
                &env(&[])
            )
            .unwrap_err()
            .key,
            "audit.key"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "0123456789abcdef0123456789abcde\n").unwrap();
        let err = load_offline(AuditToml::Text(""), &[file], &env(&[])).unwrap_err();
        assert_eq!(err.key, "--key-file");
        assert!(!err.to_string().contains("0123456789"), "{err}");
        let err =
            load_offline(AuditToml::Text(""), &[dir.path().join("no")], &env(&[])).unwrap_err();
        assert_eq!(err.key, "--key-file");
    }

    #[test]
    fn a_typo_in_the_audit_table_is_refused_and_a_missing_file_named() {
        let err =
            load_offline(AuditToml::Text("[audit]\nkye = \"x\"\n"), &[], &env(&[])).unwrap_err();
        assert!(err.to_string().contains("kye"), "{err}");
        let err = load_offline(
            AuditToml::File(Path::new("/nonexistent/payshim.toml")),
            &[],
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(err.key, "--config");
    }

    #[test]
    fn previous_keys_come_from_the_env_or_the_table_and_key_files_replace_all() {
        const OLD1: &str = "previous-key-one-0123456789abcdef0123456";
        const OLD2: &str = "previous-key-two-0123456789abcdef0123456";
        let toml = format!(
            "[audit]\nkey = \"{KEY}\"\nprevious_keys = [\"{OLD1}\", \"{OLD2}\"]\nfingerprint_key = \"x\"\n"
        );
        let got = load_offline(AuditToml::Text(&toml), &[], &env(&[])).unwrap();
        let keys: Vec<&[u8]> = got.keys.iter().map(|k| k.expose_secret()).collect();
        assert_eq!(keys, [KEY.as_bytes(), OLD1.as_bytes(), OLD2.as_bytes()]);

        let vars = env(&[("PAYSHIM__AUDIT__PREVIOUS_KEYS", &format!("{OLD2} ,{OLD1},"))]);
        let got = load_offline(AuditToml::Text(&toml), &[], &vars).unwrap();
        let keys: Vec<&[u8]> = got.keys.iter().map(|k| k.expose_secret()).collect();
        assert_eq!(keys, [KEY.as_bytes(), OLD2.as_bytes(), OLD1.as_bytes()]);

        let vars = env(&[("PAYSHIM__AUDIT__PREVIOUS_KEYS", "short")]);
        let err = load_offline(AuditToml::Text(&toml), &[], &vars).unwrap_err();
        assert_eq!(err.key, "audit.previous_keys[0]");

        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = [OLD1, OLD2]
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let file = dir.path().join(format!("key{i}"));
                std::fs::write(&file, format!("{key}\n")).unwrap();
                file
            })
            .collect();
        let got = load_offline(AuditToml::Text(&toml), &files, &env(&[])).unwrap();
        let keys: Vec<&[u8]> = got.keys.iter().map(|k| k.expose_secret()).collect();
        assert_eq!(keys, [OLD1.as_bytes(), OLD2.as_bytes()]);
    }
}
