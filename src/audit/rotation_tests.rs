//! Key rotation and system events in the chain, on real files: a rotation verifies with
//! both keys and names the first record a missing key leaves unverifiable; a restart
//! continues a rotated chain; system events are chained, counted and never pending.

use std::fs;
use std::path::{Path, PathBuf};

use secrecy::SecretSlice;

use super::*;

const OLD: &[u8] = b"old audit chain key, 32 bytes at least";
const NEW: &[u8] = b"new audit chain key, 32 bytes at least";
const OTHER: &[u8] = b"some other key, not this chain's, 32 b";

fn secret(key: &[u8]) -> SecretSlice<u8> {
    SecretSlice::from(key.to_vec())
}

fn start(path: &Path, key: &[u8], previous: &[&[u8]]) -> AuditLog {
    AuditLog::start(AuditSettings {
        path: path.to_path_buf(),
        key: secret(key),
        previous_keys: previous.iter().map(|k| secret(k)).collect(),
        max_file_bytes: AuditSettings::DEFAULT_MAX_FILE_BYTES,
    })
}

fn record(i: u64) -> AuditRecord {
    AuditRecord::new(
        AuditEvent::PaymentForwarded,
        format!("req-{i}"),
        "web",
        "192.0.2.1:1",
        crate::outcome::Outcome::Forwarded,
    )
}

async fn append(log: &AuditLog, range: std::ops::Range<u64>) {
    for i in range {
        log.append(record(i)).await.unwrap();
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    super::read_records(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    fn log(&self) -> PathBuf {
        self.0.path().join("audit.jsonl")
    }
}

/// 3 records with OLD, the rotation (line 4), 2 records with NEW.
async fn rotated_chain(dir: &Dir) {
    let log = start(&dir.log(), OLD, &[]);
    append(&log, 0..3).await;
    log.rotate_key(secret(NEW)).await.unwrap();
    append(&log, 3..5).await;
    log.shutdown().await;
}

#[tokio::test]
async fn a_rotated_chain_verifies_with_both_keys_only() {
    let dir = Dir::new();
    rotated_chain(&dir).await;
    let (old_id, new_id) = (KeyId::of(OLD), KeyId::of(NEW));
    let all = lines(&dir.log());
    assert_eq!(all.len(), 6);
    for r in &all[..4] {
        assert_eq!(r["key_id"], old_id.as_str(), "{r}");
    }
    assert_eq!(all[3]["event"], "audit.key_rotated");
    assert_eq!(all[3]["old_key_id"], old_id.as_str());
    assert_eq!(all[3]["new_key_id"], new_id.as_str());
    for r in &all[4..] {
        assert_eq!(r["key_id"], new_id.as_str(), "{r}");
    }

    let files = [dir.log()];
    for keys in [[OLD, NEW], [NEW, OLD]] {
        let report = verify_chain(&files, &keys).unwrap();
        assert_eq!(report.records, 6);
        assert_eq!((report.system_events, report.key_rotations), (1, 1));
    }

    let err = verify_chain(&files, &[NEW]).unwrap_err();
    assert_eq!(err.line(), 1, "{err}");
    assert!(
        matches!(&err, VerifyError::KeyNotGiven { key_id, .. } if *key_id == old_id),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("audit.jsonl: line 1: signed by key id"),
        "{text}"
    );
    assert!(text.contains(old_id.as_str()), "{text}");

    let err = verify_chain(&files, &[OLD]).unwrap_err();
    assert_eq!(err.line(), 5, "{err}");
    assert!(
        matches!(&err, VerifyError::KeyNotGiven { key_id, .. } if *key_id == new_id),
        "{err}"
    );
}

#[tokio::test]
async fn a_changed_switch_or_a_retired_key_signing_later_is_refused() {
    let dir = Dir::new();
    rotated_chain(&dir).await;
    let text = super::read_records(&dir.log()).unwrap();
    let new_id = KeyId::of(NEW);
    let other_id = KeyId::of(OTHER);

    // The switch record names another new key: its mac no longer matches.
    let changed = text.replacen(new_id.as_str(), other_id.as_str(), 1);
    let path = dir.0.path().join("changed.jsonl");
    fs::write(&path, changed).unwrap();
    let err = verify_chain(&[path], &[OLD, NEW, OTHER]).unwrap_err();
    assert!(matches!(err, VerifyError::BadMac { line: 4, .. }), "{err}");

    // The holder of the retired key appends a record of its own after the switch.
    let head: Vec<&str> = text.lines().take(4).collect();
    let switch: serde_json::Value = serde_json::from_str(head[3]).unwrap();
    let signer = key_id::Signer::new(OLD);
    let (forged, _) = record::encode_line(
        &signer,
        5,
        "2026-01-01T00:00:00.000000Z",
        &record(99),
        switch["mac"].as_str().unwrap(),
    )
    .unwrap();
    let path = dir.0.path().join("forged.jsonl");
    let mut bytes = head.join("\n").into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(&forged);
    fs::write(&path, bytes).unwrap();
    let err = verify_chain(&[path], &[OLD, NEW]).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongKey { line: 5, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_restart_continues_a_rotated_chain() {
    let dir = Dir::new();
    rotated_chain(&dir).await;
    // Restarted with the new key alone: the chain is on it already.
    let log = start(&dir.log(), NEW, &[]);
    assert!(log.is_healthy());
    append(&log, 5..6).await;
    log.shutdown().await;
    let report = verify_chain(&[dir.log()], &[OLD, NEW]).unwrap();
    assert_eq!(report.records, 7);

    // Restarted with the old key again, not configured as previous: refused.
    let log = start(&dir.log(), OLD, &[]);
    assert!(!log.is_healthy());
    log.shutdown().await;
}

#[tokio::test]
async fn a_crash_right_after_the_switch_restarts_on_the_new_key_alone() {
    let dir = Dir::new();
    let log = start(&dir.log(), OLD, &[]);
    append(&log, 0..2).await;
    log.rotate_key(secret(NEW)).await.unwrap();
    log.shutdown().await;
    // The last line is the switch, signed with OLD, which is gone now.
    let log = start(&dir.log(), NEW, &[]);
    assert!(log.is_healthy());
    append(&log, 2..3).await;
    log.shutdown().await;
    assert_eq!(verify_chain(&[dir.log()], &[OLD, NEW]).unwrap().records, 4);
}

#[tokio::test]
async fn a_key_changed_across_a_restart_hands_the_chain_over() {
    let dir = Dir::new();
    let log = start(&dir.log(), OLD, &[]);
    append(&log, 0..2).await;
    log.shutdown().await;

    // A new key without the old one as previous: the chain cannot continue.
    let log = start(&dir.log(), NEW, &[OTHER]);
    assert!(!log.is_healthy());
    log.shutdown().await;

    let log = start(&dir.log(), NEW, &[OTHER, OLD]);
    assert!(log.is_healthy());
    append(&log, 2..3).await;
    log.shutdown().await;
    let all = lines(&dir.log());
    assert_eq!(all.len(), 4);
    assert_eq!(all[2]["event"], "audit.key_rotated");
    assert_eq!(all[2]["key_id"], KeyId::of(OLD).as_str());
    assert_eq!(all[2]["new_key_id"], KeyId::of(NEW).as_str());
    assert_eq!(all[3]["key_id"], KeyId::of(NEW).as_str());
    let report = verify_chain(&[dir.log()], &[NEW, OLD]).unwrap();
    assert_eq!((report.records, report.key_rotations), (4, 1));
    assert_eq!(
        verify_chain(&[dir.log()], &[OLD]).unwrap_err().line(),
        4,
        "the first record signed with the new key"
    );
}

#[tokio::test]
async fn system_events_are_chained_counted_and_never_pending() {
    let dir = Dir::new();
    let log = start(&dir.log(), OLD, &[]);
    log.system_event(SystemEvent::Started {
        version: "9.9.9".into(),
        config_hash: "ab".repeat(32),
    })
    .await
    .unwrap();
    append(&log, 0..1).await;
    log.system_event(SystemEvent::ConfigReloaded {
        config_hash: "cd".repeat(32),
        changed: vec!["clients"],
        trigger: ReloadTrigger::Signal,
    })
    .await
    .unwrap();
    log.system_event(SystemEvent::ReloadRefused {
        reason: "config key `server.listen`: not live".into(),
        trigger: ReloadTrigger::FileChange,
    })
    .await
    .unwrap();
    log.system_event(SystemEvent::KeyRotated {
        key: "auth.session_key",
        old_key_id: KeyId::of(b"a").to_string(),
        new_key_id: KeyId::of(b"b").to_string(),
    })
    .await
    .unwrap();
    log.system_event(SystemEvent::Stopped).await.unwrap();
    log.shutdown().await;

    let all = lines(&dir.log());
    let events: Vec<&str> = all.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "system.started",
            "payment.forwarded",
            "config.reloaded",
            "config.reload_refused",
            "key.rotated",
            "system.stopped"
        ]
    );
    assert_eq!(all[0]["version"], "9.9.9");
    assert_eq!(all[2]["changed"], serde_json::json!(["clients"]));
    assert_eq!(all[2]["trigger"], "signal");
    assert_eq!(all[3]["trigger"], "file_change");

    let report = verify_chain(&[dir.log()], &[OLD]).unwrap();
    assert_eq!((report.records, report.system_events), (6, 5));
    // A key.rotated record for another key does not move the chain off its key.
    assert_eq!(report.key_rotations, 0);
    let pending = pending_in(&[dir.log()]).unwrap();
    assert_eq!((pending.records, pending.unreadable), (6, 0));
    assert_eq!(pending.pending.len(), 1);
    assert_eq!(pending.pending[0].request_id, "req-0");
}

/// A chain as written before records named their key: no `key_id`.
fn legacy_chain(path: &Path, key: &[u8], n: u64) {
    let signer = crate::keyed::KeyedHash::new(key);
    let mut prev = GENESIS_PREV.to_string();
    let mut text = String::new();
    for seq in 1..=n {
        let body = format!(
            r#"{{"seq":{seq},"ts":"2025-01-01T00:00:00.000001Z","event":"payment.forwarded","request_id":"legacy-{seq}","client_id":"web","remote_addr":"192.0.2.1:1","outcome":"forwarded","prev":"{prev}"}}"#
        );
        let mac = hex32(&signer.mac(&[body.as_bytes()]));
        text.push_str(&body[..body.len() - 1]);
        text.push_str(&format!(",\"mac\":\"{mac}\"}}\n"));
        prev = mac;
    }
    fs::write(path, text).unwrap();
}

#[tokio::test]
async fn a_chain_from_before_key_ids_still_verifies_and_continues() {
    let dir = Dir::new();
    legacy_chain(&dir.log(), OLD, 3);
    assert_eq!(verify_chain(&[dir.log()], &[OLD]).unwrap().records, 3);
    assert_eq!(verify_chain(&[dir.log()], &[NEW, OLD]).unwrap().records, 3);
    assert!(matches!(
        verify_chain(&[dir.log()], &[NEW]).unwrap_err(),
        VerifyError::BadMac { line: 1, .. }
    ));

    // Continued with the same key, then rotated across a restart.
    let log = start(&dir.log(), OLD, &[]);
    assert!(log.is_healthy());
    append(&log, 3..4).await;
    log.shutdown().await;
    let log = start(&dir.log(), NEW, &[OLD]);
    assert!(log.is_healthy());
    append(&log, 4..5).await;
    log.shutdown().await;
    let report = verify_chain(&[dir.log()], &[OLD, NEW]).unwrap();
    assert_eq!((report.records, report.key_rotations), (6, 1));
    let all = lines(&dir.log());
    assert!(all[2].get("key_id").is_none());
    assert_eq!(all[3]["key_id"], KeyId::of(OLD).as_str());
    // Restarted on a legacy tail with a key that did not sign it: refused.
    let dir = Dir::new();
    legacy_chain(&dir.log(), OLD, 2);
    let log = start(&dir.log(), NEW, &[]);
    assert!(!log.is_healthy());
    log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_amid_concurrent_appends_and_file_rotations_verifies() {
    let dir = Dir::new();
    let log = AuditLog::start(AuditSettings {
        path: dir.log(),
        key: secret(OLD),
        previous_keys: Vec::new(),
        max_file_bytes: 2048,
    });
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(record(i)).await.unwrap() })
        })
        .collect();
    log.rotate_key(secret(NEW)).await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    log.shutdown().await;
    let files = chain_files(&dir.log()).unwrap();
    assert!(files.len() > 2, "{files:?}");
    let report = verify_chain(&files, &[NEW, OLD]).unwrap();
    assert_eq!((report.records, report.key_rotations), (201, 1));
}
