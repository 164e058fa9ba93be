//! Reloads in the audit log: a refused and an applied reload are recorded (with no
//! configured secret), and the audit key rotated by a reload leaves a chain that
//! `payshim audit verify` checks with both keys, and with either alone up to the switch.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::{OK, REFUSED, Scene, rewrite_config, wait_metric};
use crate::support::TestClient;
use crate::support::cards::Binary;
use crate::support::payshim::{
    ORDER, SESSION_KEY, STOREFRONT_KEY, payment_body, set_key, toml_str,
};

/// A payment with the support's card; panics unless 201.
async fn pay(client: &TestClient, binary: &Binary) {
    let request = Request::post(binary.url(&format!("/v2/orders/{ORDER}/payments")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::from(payment_body()))
        .unwrap();
    let resp = client.send(request).await.expect("payment");
    assert_eq!(resp.status, 201, "{}\n{}", resp.text(), binary.output());
}

/// `payshim audit verify` with the key files given, on one audit file.
fn verify(keys: &[&Path], audit: &Path) -> std::process::Output {
    let mut cmd = std::process::Command::new(crate::support::cards::BIN);
    cmd.args(["audit", "verify"]);
    for key in keys {
        cmd.arg("--key-file").arg(key);
    }
    cmd.arg(audit).current_dir(audit.parent().unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run payshim audit verify")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_audited_and_the_audit_key_rotates_mid_run() {
    const NEW_AUDIT_KEY: &str = "audit-key-rotated-by-reload-9e8d7c6b5a4f3e2d1c0b";
    let scene = Scene::new(Duration::ZERO).await;
    let audit = scene.dir.path().join("audit").join("payshim.jsonl");
    let auth = format!("\n[auth]\nsession_key = {}\n", toml_str(SESSION_KEY));
    let config = format!("{}{auth}", scene.config("\"off\""));
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    pay(&client, &binary).await;

    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_ip", Some("\"often\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, REFUSED, 1.0).await;

    // The documented rotation: a new chain key, the old one kept as previous and pinned as
    // the fingerprint key (card fingerprints and limits keep their history).
    let old_key = toml_str(crate::support::payshim::AUDIT_KEY);
    let rotated = set_key(&config, "audit", "key", Some(&toml_str(NEW_AUDIT_KEY)));
    let rotated = set_key(
        &rotated,
        "audit",
        "previous_keys",
        Some(&format!("[{old_key}]")),
    );
    let rotated = set_key(&rotated, "audit", "fingerprint_key", Some(&old_key));
    rewrite_config(&binary, &rotated);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    pay(&client, &binary).await;
    binary.stop().await;

    let text = payshim::audit::read_records(&audit).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "system.started",
            "payment.forwarded",
            "payment.completed",
            "config.reload_refused",
            "audit.key_rotated",
            "config.reloaded",
            "payment.forwarded",
            "payment.completed",
            "system.stopped",
        ]
    );
    let refused = &records[3];
    assert_eq!(refused["trigger"], "signal", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("limits.per_ip"),
        "{refused}"
    );
    let reloaded = &records[5];
    assert_eq!(
        reloaded["changed"],
        serde_json::json!(["audit"]),
        "{reloaded}"
    );
    assert_ne!(reloaded["config_hash"], records[0]["config_hash"]);
    for secret in [
        crate::support::payshim::AUDIT_KEY,
        NEW_AUDIT_KEY,
        SESSION_KEY,
        STOREFRONT_KEY,
    ] {
        assert!(
            !text.contains(secret),
            "a configured secret is in the audit log"
        );
    }

    let dir = scene.dir.path();
    let (old_file, new_file) = (dir.join("old.key"), dir.join("new.key"));
    std::fs::write(&old_file, crate::support::payshim::AUDIT_KEY).unwrap();
    std::fs::write(&new_file, NEW_AUDIT_KEY).unwrap();
    let both = verify(&[&old_file, &new_file], &audit);
    assert!(both.status.success(), "{both:?}");
    let only_new = verify(&[&new_file], &audit);
    assert_eq!(only_new.status.code(), Some(2), "{only_new:?}");
    let stderr = String::from_utf8_lossy(&only_new.stderr);
    assert!(
        stderr.contains("line 1:"),
        "names the first record it cannot verify: {stderr}"
    );
    let only_old = verify(&[&old_file], &audit);
    assert_eq!(only_old.status.code(), Some(2), "{only_old:?}");
    let stderr = String::from_utf8_lossy(&only_old.stderr);
    assert!(
        stderr.contains("line 6:"),
        "the first record after the switch: {stderr}"
    );
}
