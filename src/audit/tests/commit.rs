//! Group commit: how many records share a sync.

use super::*;

/// A burst: all N appends in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed() {
    const N: u64 = 2000;
    let dir = TempDir::new("concurrent");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    assert!(log.is_healthy());

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(record(i)).await })
        })
        .collect();
    let mut seqs = HashSet::new();
    for task in tasks {
        let seq = task.await.unwrap().unwrap();
        assert!(seqs.insert(seq), "seq {seq} twice");
    }
    assert_eq!(seqs, (1..=N).collect::<HashSet<_>>());

    assert_group_committed(log.stats(), N);
    assert!(log.is_healthy());
    log.shutdown().await;

    let report = verify(&[path]).unwrap();
    assert_eq!(
        report,
        VerifyReport {
            records: N,
            files: 1,
            torn_tail: false,
            system_events: 0,
            key_rotations: 0,
        }
    );
}

/// Steady load, as from concurrent payments: each of 64 appenders waits for its record to
/// be durable before appending the next, so up to 64 appends are in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appenders_waiting_for_each_record_share_syncs() {
    const APPENDERS: u64 = 64;
    const EACH: u64 = 16;
    let dir = TempDir::new("appenders");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let log = log.clone();
            tokio::spawn(async move { append_n(&log, a * EACH..(a + 1) * EACH).await })
        })
        .collect();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.is_sorted(),
            "one appender's records in order: {seqs:?}"
        );
    }
    assert_group_committed(log.stats(), APPENDERS * EACH);
    log.shutdown().await;
    assert_eq!(verify(&[path]).unwrap().records, APPENDERS * EACH);
}
