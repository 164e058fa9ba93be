//! The config's fingerprint for the audit chain and the metrics: which configuration was
//! in effect, without revealing any secret.

use sha2::{Digest, Sha256};

use super::Config;

impl Config {
    /// SHA-256 (lowercase hex) of the effective config in the masked form `check-config`
    /// prints: every secret is `****` there, so the hash says which settings were in
    /// effect and nothing about a key, a token or a client secret (changing only a secret
    /// leaves it unchanged). Two configs that print alike hash alike.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_string().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const BASE: &str = r#"
[upstream]
url = "sandbox"
[auth]
session_key = "session-key-0123456789abcdef0123456789"
[audit]
key = "audit-key-0123456789abcdef0123456789abcd"
"#;

    fn hash(toml: &str, env: &[(&str, &str)]) -> String {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::from_toml(toml, &env).unwrap().hash()
    }

    #[test]
    fn hash_is_hex_sha256_of_the_masked_form_and_ignores_secrets() {
        let h = hash(BASE, &[]);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let config = crate::config::from_toml(BASE, &HashMap::new()).unwrap();
        assert_eq!(h, hex::encode(Sha256::digest(config.to_string())));
        assert_eq!(h, hash(BASE, &[]));
        let other_secrets = [
            (
                "PAYSHIM__AUTH__SESSION_KEY",
                "other-session-key-0123456789abcdef01234",
            ),
            (
                "PAYSHIM__AUDIT__KEY",
                "other-audit-key-0123456789abcdef012345678",
            ),
        ];
        assert_eq!(h, hash(BASE, &other_secrets));
        assert_ne!(h, hash(BASE, &[("PAYSHIM__LOG__LEVEL", "debug")]));
    }
}
