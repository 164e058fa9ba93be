//! Bad configuration values stop start-up with an error naming the key (issue 2), and no
//! error or `check-config` output ever shows a secret.

use crate::support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::TestPki;
use support::payshim::{
    AUDIT_KEY, SESSION_KEY, UPSTREAM_TOKEN, base_config, set_key, sha256_hex, toml_str,
};

const BIN: &str = env!("CARGO_BIN_EXE_payshim");

/// A short audit key (too short to be accepted), also a secret that must not be echoed.
const SHORT_AUDIT_KEY: &str = "short-audit-secret-17";

/// Makes a bad config from the valid base.
type Edit = Box<dyn Fn(&str, &Fixture) -> String>;

/// One bad config: how to make it from the valid base, and the key the error must name.
struct Case {
    name: &'static str,
    edit: Edit,
    env: Vec<(&'static str, &'static str)>,
    key: &'static str,
}

struct Fixture {
    pki: TestPki,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            pki: TestPki::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn base(&self) -> String {
        base_config(&self.pki, "https://api.moltin.com", self.dir.path())
    }
}

fn set(section: &'static str, key: &'static str, value: &'static str) -> Edit {
    Box::new(move |toml, _| set_key(toml, section, key, Some(value)))
}

fn remove(section: &'static str, key: &'static str) -> Edit {
    Box::new(move |toml, _| set_key(toml, section, key, None))
}

fn case(name: &'static str, edit: Edit, key: &'static str) -> Case {
    Case {
        name,
        edit,
        env: Vec::new(),
        key,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "server.listen not an address",
            set("server", "listen", "\"localhost:https\""),
            "server.listen",
        ),
        case(
            "server.listen without a port",
            set("server", "listen", "\"127.0.0.1\""),
            "server.listen",
        ),
        case(
            "admin.listen not an address",
            set("admin", "listen", "\"anywhere\""),
            "admin.listen",
        ),
        case(
            "upstream.timeout not a duration",
            set("upstream", "timeout", "\"soon\""),
            "upstream.timeout",
        ),
        case(
            "upstream.connect_timeout zero",
            set("upstream", "connect_timeout", "\"0s\""),
            "upstream.connect_timeout",
        ),
        case(
            "upstream.pool_idle_timeout longer than 10 minutes",
            set("upstream", "pool_idle_timeout", "\"1h\""),
            "upstream.pool_idle_timeout",
        ),
        case(
            "upstream.pool_idle_timeout not a duration",
            set("upstream", "pool_idle_timeout", "\"30\""),
            "upstream.pool_idle_timeout",
        ),
        case(
            "upstream.pool_max_idle negative",
            set("upstream", "pool_max_idle", "-1"),
            "upstream.pool_max_idle",
        ),
        case(
            "server.header_read_timeout not a duration",
            set("server", "header_read_timeout", "\"10\""),
            "server.header_read_timeout",
        ),
        case(
            "limits.max_body unknown unit",
            set("limits", "max_body", "\"12XB\""),
            "limits.max_body",
        ),
        case(
            "server.max_header_size not a size",
            set("server", "max_header_size", "\"big\""),
            "server.max_header_size",
        ),
        case("audit.key missing", remove("audit", "key"), "audit.key"),
        case(
            "audit.key too short",
            Box::new(|toml, _| set_key(toml, "audit", "key", Some(&toml_str(SHORT_AUDIT_KEY)))),
            "audit.key",
        ),
        case(
            "upstream.auth.token missing for a real upstream",
            remove("upstream.auth", "token"),
            "upstream.auth.token",
        ),
        case(
            "upstream.auth.token empty",
            set("upstream.auth", "token", "\"  \""),
            "upstream.auth.token",
        ),
        case(
            "upstream.url plain http to a non-loopback host",
            set("upstream", "url", "\"http://api.moltin.com\""),
            "upstream.url",
        ),
        case(
            "upstream.url not a URL",
            set("upstream", "url", "\"api.moltin.com/v2\""),
            "upstream.url",
        ),
        case(
            "upstream.url with a path",
            set("upstream", "url", "\"https://api.moltin.com/v2\""),
            "upstream.url",
        ),
        case(
            "server.cert without server.key",
            remove("server", "key"),
            "server.key",
        ),
        case(
            "server.key without server.cert",
            remove("server", "cert"),
            "server.cert",
        ),
        case(
            "server.cert does not exist",
            Box::new(|toml, f| {
                let missing = f.dir.path().join("no-such-chain.pem");
                set_key(
                    toml,
                    "server",
                    "cert",
                    Some(&toml_str(missing.to_str().unwrap())),
                )
            }),
            "server.cert",
        ),
        case(
            "upstream.ca does not exist",
            set("upstream", "ca", "\"/nonexistent/payshim/ca.pem\""),
            "upstream.ca",
        ),
        case(
            "api_key_sha256 not hex",
            set(
                "clients",
                "api_key_sha256",
                "\"zz-not-hex-zz-not-hex-zz-not-hex-zz-not-hex-zz-not-hex-zz-not-hexx\"",
            ),
            "clients[0].api_key_sha256",
        ),
        case(
            "api_key_sha256 too short",
            set("clients", "api_key_sha256", "\"6ecc7fe3\""),
            "clients[0].api_key_sha256",
        ),
        case(
            "duplicate client id",
            Box::new(|toml, _| {
                format!(
                    "{toml}\n[[clients]]\nid = \"web-eu\"\napi_key_sha256 = \"{}\"\n",
                    sha256_hex("another-storefront-key-000001")
                )
            }),
            "clients[1].id",
        ),
        case(
            "client id with a space",
            set("clients", "id", "\"web eu\""),
            "clients[0].id",
        ),
        case(
            "unknown payment gateway",
            Box::new(|toml, _| {
                format!("{toml}\n[payments]\ngateways = [\"card_connect\", \"paypal\"]\n")
            }),
            "payments.gateways",
        ),
        case(
            "raw card fields for a gateway that never took them",
            Box::new(|toml, _| {
                format!(
                    "{toml}\n[payments]\ngateways = [\"manual\"]\nraw_card_gateways = [\"manual\"]\n"
                )
            }),
            "payments.raw_card_gateways",
        ),
        case(
            "raw card fields for a gateway not in use",
            Box::new(|toml, _| {
                format!(
                    "{toml}\n[payments]\ngateways = [\"stripe\"]\nraw_card_gateways = [\"card_connect\"]\n"
                )
            }),
            "payments.raw_card_gateways",
        ),
        case(
            "unknown client route name",
            set("clients", "routes", "[\"payments\", \"refunds\"]"),
            "clients[0].routes",
        ),
        case(
            "wildcard origin",
            set("clients", "allowed_origins", "[\"*\"]"),
            "clients[0].allowed_origins[0]",
        ),
        case(
            "origin with a path",
            set(
                "clients",
                "allowed_origins",
                "[\"https://shop.example\", \"https://shop.example/checkout\"]",
            ),
            "clients[0].allowed_origins[1]",
        ),
        case(
            "limits.per_ip not a quota",
            set("limits", "per_ip", "\"lots\""),
            "limits.per_ip",
        ),
        case(
            "limits.per_client zero",
            set("limits", "per_client", "\"0/s\""),
            "limits.per_client",
        ),
        case(
            "log.format unknown",
            set("log", "format", "\"xml\""),
            "log.format",
        ),
        case(
            "log.flush_interval not a duration",
            set("log", "flush_interval", "\"soon\""),
            "log.flush_interval",
        ),
        case(
            "log.flush_interval too long",
            set("log", "flush_interval", "\"1min\""),
            "log.flush_interval",
        ),
        case(
            "auth.session_key too short",
            Box::new(|toml, _| format!("{toml}\n[auth]\nsession_key = \"tiny-session-key\"\n")),
            "auth.session_key",
        ),
        // Unknown keys (deny_unknown_fields) are reported with their full name.
        case(
            "unknown key in [server]",
            set("server", "listn", "\"127.0.0.1:8443\""),
            "server.listn",
        ),
        case(
            "unknown key in [upstream.auth]",
            set("upstream.auth", "tokne", "\"x\""),
            "upstream.auth.tokne",
        ),
        Case {
            name: "env PAYSHIM__UPSTREAM__TIMEOUT=bad",
            edit: Box::new(|toml, _| toml.to_string()),
            env: vec![("PAYSHIM__UPSTREAM__TIMEOUT", "bad")],
            key: "upstream.timeout",
        },
        Case {
            name: "env PAYSHIM__SERVER__LISTEN=nowhere",
            edit: Box::new(|toml, _| toml.to_string()),
            env: vec![("PAYSHIM__SERVER__LISTEN", "nowhere")],
            key: "server.listen",
        },
        Case {
            name: "env PAYSHIM__LIMITS__MAX_BODY=12XB",
            edit: Box::new(|toml, _| toml.to_string()),
            env: vec![("PAYSHIM__LIMITS__MAX_BODY", "12XB")],
            key: "limits.max_body",
        },
    ]
}

/// The secrets of the base config and of the cases: never in an error message.
fn secrets() -> [&'static str; 4] {
    [AUDIT_KEY, UPSTREAM_TOKEN, SHORT_AUDIT_KEY, SESSION_KEY]
}

#[test]
fn bad_values_are_reported_with_their_key() {
    let fixture = Fixture::new();
    let base = fixture.base();
    let no_env = HashMap::new();
    payshim::config::from_toml(&base, &no_env).expect("the base config is valid");

    let mut failures = Vec::new();
    for case in cases() {
        let toml = (case.edit)(&base, &fixture);
        let env: HashMap<String, String> = case
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(
            toml != base || !env.is_empty(),
            "{}: the edit changed nothing",
            case.name
        );
        match payshim::config::from_toml(&toml, &env) {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(e) => {
                if e.key != case.key {
                    failures.push(format!(
                        "{}: key {:?}, expected {:?} ({})",
                        case.name, e.key, case.key, e.message
                    ));
                }
                if !says_what_is_expected(&e.message) {
                    failures.push(format!(
                        "{}: the message does not say what is expected: {:?}",
                        case.name, e.message
                    ));
                }
                let shown = format!("{e} {e:?}");
                for secret in secrets() {
                    if shown.contains(secret) {
                        failures.push(format!("{}: the error shows a secret: {shown}", case.name));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A message that tells the operator the fix: what is expected, required or allowed.
fn says_what_is_expected(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "expected", "must", "needs", "need ", "missing", "unknown", "only", "at least", "set ",
        "use ", "give ",
    ]
    .iter()
    .any(|w| m.contains(w))
}

#[test]
fn unknown_keys_are_named() {
    let fixture = Fixture::new();
    let no_env = HashMap::new();
    for (section, key, reported_on) in [
        ("server", "listn", "server.listn"),
        ("upstream", "time_out", "upstream.time_out"),
        ("upstream.auth", "tokne", "upstream.auth.tokne"),
        ("limits", "max_bodY", "limits.max_bodY"),
        ("clients", "api_key", "clients[0].api_key"),
    ] {
        let toml = set_key(&fixture.base(), section, key, Some("\"x\""));
        let err =
            payshim::config::from_toml(&toml, &no_env).expect_err("an unknown key must be refused");
        assert_eq!(err.key, reported_on, "{section}.{key}: {err}");
        assert!(
            err.message.contains(&format!("`{key}`")),
            "{section}.{key}: the message does not name the key: {}",
            err.message
        );
    }
    // An unknown table: the message names it.
    let toml = format!(
        "{}\n[upstreams]\nurl = \"https://x.example\"\n",
        fixture.base()
    );
    let err = payshim::config::from_toml(&toml, &no_env).expect_err("unknown table");
    assert!(err.message.contains("`upstreams`"), "{err}");
    assert_eq!(err.key, "upstreams", "{err}");
}

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

fn write_config(dir: &std::path::Path, name: &str, toml: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

fn payshim_cmd(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn check_config_prints_a_good_config_without_secrets() {
    let fixture = Fixture::new();
    let toml = format!(
        "{}\n[auth]\nsession_key = {}\n",
        fixture.base(),
        toml_str(SESSION_KEY)
    );
    let path = write_config(fixture.dir.path(), "good.toml", &toml);
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run payshim check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // The effective config is printed...
    assert!(stdout.contains("[server]"), "{stdout}");
    assert!(stdout.contains("https://api.moltin.com"), "{stdout}");
    assert!(stdout.contains("web-eu"), "{stdout}");
    // Choices are printed as the config spells them.
    for line in [
        "format = \"json\"",
        "on_store_error = \"deny\"",
        "flush_interval = \"100ms\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }
    // ...with every secret masked.
    for secret in [UPSTREAM_TOKEN, AUDIT_KEY, SESSION_KEY] {
        assert!(!stdout.contains(secret), "secret in stdout:\n{stdout}");
        assert!(!stderr.contains(secret), "secret in stderr:\n{stderr}");
    }
}

#[test]
fn check_config_names_the_bad_key_and_exits_1() {
    let fixture = Fixture::new();
    let toml = set_key(&fixture.base(), "upstream", "timeout", Some("\"soon\""));
    let path = write_config(fixture.dir.path(), "bad.toml", &toml);
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run payshim check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("upstream.timeout"), "stderr:\n{stderr}");
    for secret in [UPSTREAM_TOKEN, AUDIT_KEY] {
        assert!(!stderr.contains(secret), "secret in stderr:\n{stderr}");
    }

    // Same through an environment override of a good file.
    let good = write_config(fixture.dir.path(), "good.toml", &fixture.base());
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(&good)
        .env("PAYSHIM__LIMITS__MAX_BODY", "12XB")
        .output()
        .expect("run payshim check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("limits.max_body"), "stderr:\n{stderr}");

    // A config file that does not exist.
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(fixture.dir.path().join("missing.toml"))
        .output()
        .expect("run payshim check-config");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn hash_key_prints_the_sha256_of_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = payshim_cmd(dir.path())
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run payshim hash-key");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"dev-storefront-key-0001\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "6ecc7fe3e3f8594b9f5c18bb945c7da4f4df401869da81f8cc2e9ae98f837162"
    );
    // The printed hash is what the config and `base_config` use.
    assert_eq!(
        sha256_hex("dev-storefront-key-0001"),
        "6ecc7fe3e3f8594b9f5c18bb945c7da4f4df401869da81f8cc2e9ae98f837162"
    );
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
