//! The table of bad values: each is refused with an error naming its key, saying what is
//! expected and showing no secret; unknown keys and tables are named.

use std::collections::HashMap;

use super::Fixture;
use crate::support;
use support::payshim::{AUDIT_KEY, SESSION_KEY, UPSTREAM_TOKEN, set_key, sha256_hex, toml_str};

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
