//! System events and key rotation in the audit chain, through the real binary (issue 16):
//! a run writes `system.started` (version, config hash) first and `system.stopped` last,
//! with no secret of the config in any record; a chain key rotated across a restart is
//! handed over in the chain (`audit.key_rotated`), keeps card fingerprints (keyed with
//! `audit.fingerprint_key`, not the chain key), and `payshim audit verify` passes with
//! both `--key-file`s and names the first record it cannot verify with only one.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use payshim::audit::KeyId;
use support::cards::{BRANDS, Binary, pan, utc_year_month};
use support::payshim::{
    AUDIT_KEY, ORDER, SESSION_KEY, STOREFRONT_KEY, UPSTREAM_TOKEN, base_config, set_key, toml_str,
};
use support::{HttpVersion, TestClient, TestPki, Upstream, moltin_like};

const BIN: &str = env!("CARGO_BIN_EXE_payshim");
const NEW_AUDIT_KEY: &str = "audit-key-after-rotation-0f1e2d3c4b5a69788796a5b4c3d2e1";

/// A base config at info level (`Binary::start` reads the serving line) with a session
/// key and a browser client, so that the config holds every kind of secret it can.
fn config(pki: &TestPki, upstream: &Upstream, audit_dir: &Path) -> String {
    let config = base_config(pki, &upstream.url(), audit_dir);
    let config = set_key(&config, "log", "level", Some("\"info\""));
    format!(
        "{config}\n[auth]\nsession_key = {}\n\n[[clients]]\nid = \"browser\"\npublic_id = \"pk-browser\"\n",
        toml_str(SESSION_KEY)
    )
}

/// Pays with card `n`; panics unless 201.
async fn pay(client: &TestClient, binary: &Binary, n: u64) {
    let number = pan(BRANDS[0], n);
    let body = json!({"data": {
        "gateway": "card_connect", "method": "purchase",
        "first_name": "Ada", "last_name": "Lovelace", "number": number,
        "month": "9", "year": (utc_year_month().0 + 2).to_string(),
        "verification_value": "737",
    }});
    let req = Request::builder()
        .method(Method::POST)
        .uri(binary.url(&format!("/v2/orders/{ORDER}/payments")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let resp = client.send(req).await.expect("payment");
    assert_eq!(resp.status, 201, "{}\n{}", resp.text(), binary.output());
}

fn records(path: &Path) -> Vec<Value> {
    payshim::audit::read_records(path)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// `payshim ARGS` in an empty directory, without the environment's `PAYSHIM__` variables.
fn payshim(args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("cwd");
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd.path()).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run payshim")
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[tokio::test]
async fn start_and_stop_records_carry_the_version_and_config_hash_and_no_secret() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit").join("payshim.jsonl");
    let config = config(&pki, &upstream, &dir.path().join("audit"));
    let mut binary = Binary::start(dir.path(), "events", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    pay(&client, &binary, 1).await;
    binary.stop().await;

    let all = records(&audit_path);
    let events: Vec<&str> = all.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "system.started",
            "payment.forwarded",
            "payment.completed",
            "system.stopped"
        ]
    );
    let started = &all[0];
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"), "{started}");
    // The hash is SHA-256 of what `check-config` prints for the same file.
    let printed = payshim(&["check-config", "--config", text(&binary.config)]);
    assert!(printed.status.success(), "{printed:?}");
    let expected = hex::encode(Sha256::digest(&printed.stdout));
    assert_eq!(started["config_hash"], expected.as_str(), "{started}");
    // No audit.fingerprint_key: check-config says what that means for a rotation.
    let warned = String::from_utf8_lossy(&printed.stderr);
    assert!(
        warned.contains("warning: audit.fingerprint_key is not set"),
        "{warned}"
    );
    let key_id = KeyId::of(AUDIT_KEY.as_bytes());
    for r in &all {
        assert_eq!(r["key_id"], key_id.as_str(), "{r}");
    }

    let bytes = std::fs::read_to_string(&audit_path).unwrap();
    for secret in [AUDIT_KEY, SESSION_KEY, UPSTREAM_TOKEN, STOREFRONT_KEY] {
        assert!(
            !bytes.contains(secret),
            "a configured secret is in the audit log"
        );
    }
    assert!(
        !bytes.contains(&pan(BRANDS[0], 1)),
        "a PAN is in the audit log"
    );

    let out = payshim(&["audit", "verify", "--config", text(&binary.config)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: 4 records"), "{stdout}");
    assert!(stdout.contains("2 system events"), "{stdout}");
    let out = payshim(&["audit", "pending", "--config", text(&binary.config)]);
    assert!(
        out.status.success(),
        "system records are never pending: {out:?}"
    );
}

#[tokio::test]
async fn a_key_rotated_across_a_restart_is_handed_over_and_keeps_card_fingerprints() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit").join("payshim.jsonl");
    let config = config(&pki, &upstream, &dir.path().join("audit"));
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);

    let mut first = Binary::start(dir.path(), "old-key", &config).await;
    pay(&client, &first, 7).await;
    first.stop().await;

    // The operator's rotation: a new chain key, the old one as previous, and the old
    // value kept as the fingerprint key.
    let rotated = set_key(&config, "audit", "key", Some(&toml_str(NEW_AUDIT_KEY)));
    let rotated = set_key(
        &rotated,
        "audit",
        "previous_keys",
        Some(&format!("[{}]", toml_str(AUDIT_KEY))),
    );
    let rotated = set_key(
        &rotated,
        "audit",
        "fingerprint_key",
        Some(&toml_str(AUDIT_KEY)),
    );
    let mut second = Binary::start(dir.path(), "new-key", &rotated).await;
    pay(&client, &second, 7).await;
    second.stop().await;

    let all = records(&audit_path);
    let events: Vec<&str> = all.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "system.started",
            "payment.forwarded",
            "payment.completed",
            "system.stopped",
            "audit.key_rotated",
            "system.started",
            "payment.forwarded",
            "payment.completed",
            "system.stopped",
        ]
    );
    let (old_id, new_id) = (
        KeyId::of(AUDIT_KEY.as_bytes()),
        KeyId::of(NEW_AUDIT_KEY.as_bytes()),
    );
    let switch = &all[4];
    assert_eq!(switch["key_id"], old_id.as_str(), "{switch}");
    assert_eq!(switch["old_key_id"], old_id.as_str(), "{switch}");
    assert_eq!(switch["new_key_id"], new_id.as_str(), "{switch}");
    for r in &all[5..] {
        assert_eq!(r["key_id"], new_id.as_str(), "{r}");
    }
    let fingerprints: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"] == "payment.forwarded")
        .map(|r| &r["card"]["fingerprint"])
        .collect();
    assert!(fingerprints[0].is_string());
    assert_eq!(
        fingerprints[0], fingerprints[1],
        "the same card, the same fingerprint"
    );
    let bytes = std::fs::read_to_string(&audit_path).unwrap();
    assert!(!bytes.contains(NEW_AUDIT_KEY) && !bytes.contains(AUDIT_KEY));

    let old_file = dir.path().join("old.key");
    let new_file = dir.path().join("new.key");
    std::fs::write(&old_file, format!("{AUDIT_KEY}\n")).unwrap();
    std::fs::write(&new_file, format!("{NEW_AUDIT_KEY}\n")).unwrap();
    let verify = |keys: &[&PathBuf]| {
        let mut args = vec!["audit", "verify"];
        for key in keys {
            args.extend(["--key-file", text(key)]);
        }
        args.push(text(&audit_path));
        payshim(&args)
    };
    let out = verify(&[&new_file, &old_file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: 9 records"), "{stdout}");
    assert!(stdout.contains("1 key rotations"), "{stdout}");

    let file = audit_path.display();
    for (keys, line, missing) in [(&new_file, 1, &old_id), (&old_file, 6, &new_id)] {
        let out = verify(&[keys]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let needle =
            format!("{file}: line {line}: signed by key id {missing}, which was not given");
        assert!(stderr.contains(&needle), "{stderr}");
    }

    // The running config's [audit] table gives both keys to the offline tools.
    let out = payshim(&["audit", "pending", "--config", text(&second.config)]);
    assert!(out.status.success(), "{out:?}");
}
