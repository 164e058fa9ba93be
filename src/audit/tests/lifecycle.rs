//! Shutdown, ordering, and when an append resolves.

use super::*;

#[tokio::test]
async fn shutdown_flushes_and_later_appends_are_closed() {
    let dir = TempDir::new("shutdown");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    let other = log.clone();
    let queued: Vec<_> = (0..50)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(record(i)).await })
        })
        .collect();
    for task in queued {
        assert!(task.await.unwrap().is_ok());
    }
    log.shutdown().await;
    assert_eq!(other.append(record(50)).await, Err(AuditError::Closed));
    assert!(!other.is_healthy());
    assert_eq!(other.stats().records, 50);
    assert_eq!(verify(&[path]).unwrap().records, 50);
}

/// Records submitted without waiting interleave with awaited ones on one chain, and
/// shutdown writes every one that was queued before it.
#[tokio::test]
async fn submitted_records_are_written_in_order_before_shutdown() {
    let dir = TempDir::new("submit");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    for i in 0..100 {
        if i % 3 == 0 {
            log.append(record(i)).await.unwrap();
        } else {
            log.submit(record(i)).unwrap();
        }
    }
    let other = log.clone();
    log.shutdown().await;
    assert!(matches!(other.submit(record(100)), Err(Submit::Closed)));
    assert_eq!(other.stats().records, 100);
    assert_eq!(verify(std::slice::from_ref(&path)).unwrap().records, 100);
    let text = read_records(&path).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string())
        .collect();
    let expected: Vec<String> = (0..100).map(|i| format!("\"req-{i:06}\"")).collect();
    assert_eq!(ids, expected, "records keep their submission order");
}

/// A record nobody waits for, alone, is still made durable promptly: the writer lets a
/// group gather only briefly (GATHER), then syncs it by itself.
/// `append` resolves only once its record is on disk and synced: each of these appends
/// waits for the one before, so each needs a sync of its own, and the sync counter (bumped
/// right after `sync_data` returns) must already show it when the append resolves. A
/// writer that answered after `write` but before `sync_data` fails this.
#[tokio::test]
async fn an_append_resolves_only_after_its_sync() {
    let dir = TempDir::new("append-synced");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    for i in 0..5u64 {
        log.append(record(i)).await.unwrap();
        let stats = log.stats();
        assert!(
            stats.syncs > i && stats.records > i,
            "append {i} resolved with {} syncs, {} durable records",
            stats.syncs,
            stats.records
        );
        let on_disk = read_records(&path).unwrap();
        assert_eq!(
            on_disk.lines().count() as u64,
            i + 1,
            "written before it resolved"
        );
    }
    log.shutdown().await;
}

#[tokio::test]
async fn a_lone_submitted_record_is_synced_soon() {
    let dir = TempDir::new("lone-submit");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    let started = std::time::Instant::now();
    log.submit(record(0)).unwrap();
    while log.stats().records < 1 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "a lone submitted record was not synced within 2 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(log.stats().syncs, 1);
    assert_eq!(verify(std::slice::from_ref(&path)).unwrap().records, 1);
}

#[test]
fn verify_edge_cases() {
    let dir = TempDir::new("verify-edges");
    assert_eq!(
        verify(&[]).unwrap(),
        VerifyReport {
            records: 0,
            files: 0,
            torn_tail: false,
            system_events: 0,
            key_rotations: 0,
        }
    );
    let empty = dir.path("empty.jsonl");
    fs::write(&empty, b"").unwrap();
    assert_eq!(verify(std::slice::from_ref(&empty)).unwrap().records, 0);

    let missing = dir.path("missing.jsonl");
    let err = verify(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(err, VerifyError::Io { line: 0, .. }), "{err}");
    assert!(err.to_string().contains("missing.jsonl"), "{err}");

    let garbage = dir.path("garbage.jsonl");
    fs::write(&garbage, b"hello\n").unwrap();
    let err = verify(std::slice::from_ref(&garbage)).unwrap_err();
    assert!(
        matches!(err, VerifyError::Malformed { line: 1, .. }),
        "{err}"
    );
}

#[test]
fn start_works_outside_a_runtime() {
    let dir = TempDir::new("no-runtime");
    let path = dir.path("sub/dir/audit.jsonl");
    let log = start(&path);
    assert!(log.is_healthy());
    assert!(path.exists());
    drop(log);
}
