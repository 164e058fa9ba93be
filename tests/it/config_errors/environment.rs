//! The environment: a `PAYSHIM__` variable overrides a bad file value or supplies a
//! missing secret, and the shipped production example is valid with the documented
//! variables (and refused without its secrets).

use std::collections::HashMap;
use std::time::Duration;

use super::Fixture;
use crate::support;
use support::payshim::{AUDIT_KEY, SESSION_KEY, UPSTREAM_TOKEN, set_key};

#[test]
fn env_override_fixes_a_bad_file_value() {
    let fixture = Fixture::new();
    let bad = set_key(&fixture.base(), "upstream", "timeout", Some("\"soon\""));
    let no_env = HashMap::new();
    assert_eq!(
        payshim::config::from_toml(&bad, &no_env).unwrap_err().key,
        "upstream.timeout"
    );
    let env = HashMap::from([
        ("PAYSHIM__UPSTREAM__TIMEOUT".to_string(), "3s".to_string()),
        // Not PAYSHIM__-prefixed: ignored.
        ("UPSTREAM__TIMEOUT".to_string(), "bad".to_string()),
    ]);
    let config = payshim::config::from_toml(&bad, &env).expect("the override fixes it");
    assert_eq!(config.upstream.timeout, Duration::from_secs(3));

    // A missing secret supplied from the environment, the way production does it.
    let no_token = set_key(&fixture.base(), "upstream.auth", "token", None);
    let env = HashMap::from([(
        "PAYSHIM__UPSTREAM__AUTH__TOKEN".to_string(),
        UPSTREAM_TOKEN.to_string(),
    )]);
    let config = payshim::config::from_toml(&no_token, &env).expect("token from the env");
    assert!(matches!(
        config.upstream.auth,
        payshim::config::UpstreamAuth::Static(_)
    ));
    let shown = format!("{config:?} {config}");
    assert!(!shown.contains(UPSTREAM_TOKEN), "{shown}");
    assert!(!shown.contains(AUDIT_KEY), "{shown}");
}

/// The shipped production example is valid once the documented environment variables are
/// set (README, "Pointing it at the real API"), and it needs them: without the secrets it
/// is refused, naming a secret's key. TLS paths are pointed at test files, as a deployment
/// mounts its own.
#[test]
fn production_example_is_valid_with_the_documented_environment() {
    let fixture = Fixture::new();
    let toml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/payshim.production.toml"),
    )
    .expect("read config/payshim.production.toml");
    let (cert, key) = fixture.pki.server_cert();
    let mut env: HashMap<String, String> = [
        ("PAYSHIM__SERVER__CERT", cert.display().to_string()),
        ("PAYSHIM__SERVER__KEY", key.display().to_string()),
        (
            "PAYSHIM__AUDIT__PATH",
            fixture.dir.path().join("audit.jsonl").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let without_secrets = payshim::config::from_toml(&toml, &env)
        .expect_err("the production example must not start without its secrets");
    assert!(
        ["upstream.auth", "audit.key", "auth.session_key"]
            .iter()
            .any(|k| without_secrets.key.starts_with(k)),
        "refused for {:?}: {}",
        without_secrets.key,
        without_secrets.message
    );
    for (k, v) in [
        ("PAYSHIM__UPSTREAM__AUTH__CLIENT_ID", "store-client-id"),
        (
            "PAYSHIM__UPSTREAM__AUTH__CLIENT_SECRET",
            "store-client-secret",
        ),
        ("PAYSHIM__AUTH__SESSION_KEY", SESSION_KEY),
        ("PAYSHIM__AUDIT__KEY", AUDIT_KEY),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    let config = payshim::config::from_toml(&toml, &env)
        .unwrap_or_else(|e| panic!("production example refused: {} {}", e.key, e.message));
    let shown = config.to_string();
    assert!(
        shown.contains("https://useast.api.elasticpath.com"),
        "{shown}"
    );
    assert!(
        !shown.contains("store-client-secret") && !shown.contains(AUDIT_KEY),
        "{shown}"
    );
}
