//! Writer and verifier tests, on real files under the system temp directory.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;

const KEY: &[u8] = b"payshim test audit key, 32 bytes";

/// A directory removed on drop (no tempfile crate here).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "payshim-audit-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn settings(path: &Path, max_file_bytes: u64) -> AuditSettings {
    AuditSettings {
        path: path.to_path_buf(),
        key: KEY.to_vec().into(),
        previous_keys: Vec::new(),
        max_file_bytes,
    }
}

fn start(path: &Path) -> AuditLog {
    AuditLog::start(settings(path, AuditSettings::DEFAULT_MAX_FILE_BYTES))
}

fn record(i: u64) -> AuditRecord {
    let mut record = AuditRecord::new(
        AuditEvent::PaymentForwarded,
        format!("req-{i:06}"),
        "web-eu",
        "192.0.2.1:40000",
        crate::outcome::Outcome::Forwarded,
    );
    record.order_id = Some(format!("order-{i}"));
    record.gateway = Some("card_connect".into());
    record.method = Some("purchase".into());
    record.card = Some(CardSummary {
        brand: "visa".into(),
        bin: "411111".into(),
        last4: "1111".into(),
        fingerprint: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843".into(),
    });
    record
}

async fn append_n(log: &AuditLog, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in range {
        seqs.push(log.append(record(i)).await.unwrap());
    }
    seqs
}

fn verify(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    verify_files(paths, KEY)
}

/// Overwrites bytes of the file at `offset`, as a crash mid-write leaves them.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// `[from, to)` of the file holds only padding.
fn assert_padding(path: &Path, from: u64, to: u64) {
    let bytes = fs::read(path).unwrap();
    let range = &bytes[from as usize..to as usize];
    assert!(
        range.iter().all(|&b| b == 0),
        "not padding: {:?}",
        String::from_utf8_lossy(range)
    );
}

/// Fewest records per `fdatasync`, on average, that concurrent appends must reach.
///
/// The writer blocks for the first queued record, lets the group gather for `GATHER`
/// (200 µs), then takes everything queued by then into one write and one sync. Queueing an
/// append takes microseconds, so with 64 or more appends in flight a group should hold
/// nearly all of them: these tests see 50 to 64 records per sync for 64 appenders and
/// hundreds for a burst of 2000, also with the file on tmpfs (a sync then costs almost
/// nothing, so the writer's cycle is shortest) and the whole test pinned to one core shared
/// with six busy loops. One sync per record (no grouping) gives 1. 8 leaves the groups that
/// many times smaller than what the design gives before failing, so a loaded 2-core CI
/// machine does not make the check flaky, while still requiring real grouping.
const MIN_RECORDS_PER_SYNC: u64 = 8;

fn assert_group_committed(stats: AuditStats, records: u64) {
    println!(
        "group commit: {} records, {} syncs, {:.1} records per sync",
        stats.records,
        stats.syncs,
        stats.records as f64 / stats.syncs as f64
    );
    assert_eq!(stats.records, records, "{stats:?}");
    assert!(stats.syncs >= 1, "{stats:?}");
    assert!(
        stats.syncs * MIN_RECORDS_PER_SYNC <= stats.records,
        "fewer than {MIN_RECORDS_PER_SYNC} records per sync: {stats:?}"
    );
}

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

#[derive(Debug, Clone, Copy)]
enum Tamper {
    /// Change the byte at this offset of line k (negative: from the end, before the `\n`).
    Edit(usize, isize),
    Delete(usize),
    /// Swap lines k and k+1.
    Swap(usize),
    /// Insert a copy of line k-1 before line k (a replay).
    Duplicate(usize),
}

impl Tamper {
    fn line(self) -> usize {
        match self {
            Self::Edit(k, _) | Self::Delete(k) | Self::Swap(k) | Self::Duplicate(k) => k,
        }
    }

    fn apply(self, lines: &mut Vec<Vec<u8>>) {
        match self {
            Self::Edit(k, offset) => {
                let line = &mut lines[k - 1];
                let at = if offset >= 0 {
                    offset as usize
                } else {
                    line.len() - offset.unsigned_abs()
                };
                line[at] = if line[at] == b'1' { b'2' } else { b'1' };
            }
            Self::Delete(k) => {
                lines.remove(k - 1);
            }
            Self::Swap(k) => lines.swap(k - 1, k),
            Self::Duplicate(k) => {
                let copy = lines[k - 2].clone();
                lines.insert(k - 1, copy);
            }
        }
    }
}

#[tokio::test]
async fn tampering_fails_at_the_tampered_line() {
    const N: usize = 10;
    let dir = TempDir::new("tamper");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    append_n(&log, 0..N as u64).await;
    log.shutdown().await;
    let original = read_records(&path).unwrap().into_bytes();
    let lines: Vec<Vec<u8>> = original
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap().to_vec())
        .collect();
    assert_eq!(lines.len(), N);
    assert_eq!(
        verify(std::slice::from_ref(&path)).unwrap().records,
        N as u64
    );

    let cases = [
        Tamper::Edit(1, 0),   // the opening brace
        Tamper::Edit(1, 7),   // the seq value
        Tamper::Edit(4, 40),  // inside ts
        Tamper::Edit(5, 120), // inside the record fields
        Tamper::Edit(6, -80), // the end of prev
        Tamper::Edit(7, -3),  // inside mac
        Tamper::Edit(N, -1),  // the closing brace of the last line
        Tamper::Delete(1),
        Tamper::Delete(5),
        Tamper::Delete(N - 1),
        Tamper::Swap(1),
        Tamper::Swap(5),
        Tamper::Swap(N - 1),
        Tamper::Duplicate(2),
        Tamper::Duplicate(N),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let mut tampered = lines.clone();
        case.apply(&mut tampered);
        let tampered_path = dir.path(&format!("tampered-{i}.jsonl"));
        let mut bytes = tampered.join(&b'\n');
        bytes.push(b'\n');
        fs::write(&tampered_path, &bytes).unwrap();
        let err = verify(std::slice::from_ref(&tampered_path))
            .expect_err(&format!("{case:?} not detected"));
        assert_eq!(err.line(), case.line() as u64, "{case:?}: {err}");
        assert_eq!(err.file(), tampered_path, "{case:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("tampered-{i}.jsonl: line {}:", case.line())),
            "{message}"
        );
    }

    // The first record names a key the verifier was not given.
    let err = verify_files(&[path], b"another key").unwrap_err();
    assert!(
        matches!(err, VerifyError::KeyNotGiven { line: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn restart_continues_the_chain() {
    let dir = TempDir::new("restart");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    assert_eq!(append_n(&log, 0..3).await, vec![1, 2, 3]);
    log.shutdown().await;

    let log = start(&path);
    assert!(log.is_healthy());
    assert_eq!(append_n(&log, 3..5).await, vec![4, 5]);
    log.shutdown().await;

    let report = verify(&[path]).unwrap();
    assert_eq!(report.records, 5);
    assert!(!report.torn_tail);
}

#[tokio::test]
async fn torn_tail_is_reported_then_cut_off_on_restart() {
    let dir = TempDir::new("torn");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    append_n(&log, 0..4).await;
    log.shutdown().await;
    let complete_len = read_records(&path).unwrap().len() as u64;
    let file_len = fs::metadata(&path).unwrap().len();
    assert!(file_len > complete_len, "the file is preallocated");

    // A crash in the middle of writing the next group.
    let torn = b"{\"seq\":5,\"ts\":\"2025-01-01T00:0";
    write_at(&path, complete_len, torn);

    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!(
        report,
        VerifyReport {
            records: 4,
            files: 1,
            torn_tail: true,
            system_events: 0,
            key_rotations: 0,
        }
    );

    let log = start(&path);
    assert!(log.is_healthy());
    assert_eq!(read_records(&path).unwrap().len() as u64, complete_len);
    assert_padding(&path, complete_len, complete_len + torn.len() as u64);
    assert_eq!(append_n(&log, 4..6).await, vec![5, 6]);
    log.shutdown().await;
    let report = verify(&[path]).unwrap();
    assert_eq!(report.records, 6);
    assert!(!report.torn_tail);
}

#[tokio::test]
async fn torn_tail_only_line_starts_a_fresh_chain() {
    let dir = TempDir::new("torn-only");
    let path = dir.path("audit.jsonl");
    fs::write(&path, b"{\"seq\":1,\"ts\"").unwrap();
    assert_eq!(
        verify(std::slice::from_ref(&path)).unwrap(),
        VerifyReport {
            records: 0,
            files: 1,
            torn_tail: true,
            system_events: 0,
            key_rotations: 0,
        }
    );
    let log = start(&path);
    assert_eq!(append_n(&log, 0..2).await, vec![1, 2]);
    log.shutdown().await;
    assert_eq!(verify(&[path]).unwrap().records, 2);
}

#[tokio::test]
async fn rotation_keeps_one_chain_across_files() {
    const MAX: u64 = 2048;
    let dir = TempDir::new("rotate");
    let path = dir.path("audit.jsonl");
    let log = AuditLog::start(settings(&path, MAX));

    // One by one, then many at once (groups split across files).
    append_n(&log, 0..20).await;
    let tasks: Vec<_> = (20..120)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(record(i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    log.shutdown().await;

    let files = chain_files(&path).unwrap();
    assert!(files.len() > 5, "{files:?}");
    assert_eq!(files[0], dir.path("audit.jsonl.1"));
    assert_eq!(files.last().unwrap(), &path);
    for file in &files {
        let len = fs::metadata(file).unwrap().len();
        assert!(len <= MAX, "{} has {len} bytes", file.display());
    }
    // Rotated files are plain JSON Lines; the current one is preallocated to the full size.
    for file in &files[..files.len() - 1] {
        let bytes = fs::read(file).unwrap();
        assert!(!bytes.contains(&0), "padding left in {}", file.display());
        assert_eq!(bytes.last(), Some(&b'\n'));
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), MAX);
    let report = verify(&files).unwrap();
    assert_eq!(report.records, 120);
    assert_eq!(report.files, files.len());

    // Out of order: the second file first.
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    let err = verify(&swapped).unwrap_err();
    assert_eq!((err.file(), err.line()), (files[1].as_path(), 1), "{err}");
    assert!(matches!(err, VerifyError::BrokenChain { .. }), "{err}");

    // A rotated file missing.
    let mut missing = files.clone();
    missing.remove(1);
    let err = verify(&missing).unwrap_err();
    assert_eq!((err.file(), err.line()), (files[2].as_path(), 1), "{err}");

    // Only the current file: does not start the chain.
    let err = verify(std::slice::from_ref(&path)).unwrap_err();
    assert!(
        matches!(err, VerifyError::BrokenChain { line: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn restart_after_a_crash_between_rename_and_new_file() {
    let dir = TempDir::new("rotate-crash");
    let path = dir.path("audit.jsonl");
    let log = AuditLog::start(settings(&path, 1500));
    append_n(&log, 0..10).await;
    log.shutdown().await;
    let rotated = chain_files(&path).unwrap().len() - 1;
    assert!(rotated >= 1);

    // The writer renamed the full file, then died before creating the new one.
    fs::rename(&path, dir.path(&format!("audit.jsonl.{}", rotated + 1))).unwrap();
    assert!(!path.exists());

    let log = AuditLog::start(settings(&path, 1500));
    assert!(log.is_healthy());
    assert_eq!(log.append(record(10)).await, Ok(11));
    log.shutdown().await;
    let files = chain_files(&path).unwrap();
    assert_eq!(files.len(), rotated + 2);
    assert_eq!(verify(&files).unwrap().records, 11);
}

#[tokio::test]
async fn unwritable_path_is_unavailable_and_recovers() {
    let dir = TempDir::new("unwritable");
    // Root ignores permissions, so make the parent a regular file instead.
    let blocker = dir.path("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let path = blocker.join("audit.jsonl");
    let log = start(&path);
    assert!(!log.is_healthy());
    assert_eq!(log.append(record(0)).await, Err(AuditError::Unavailable));
    assert!(!log.is_healthy());
    assert_eq!(log.stats(), AuditStats::default());

    // Fix the directory: the writer's own retry makes it healthy without traffic.
    fs::remove_file(&blocker).unwrap();
    fs::create_dir(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.is_healthy() {
        assert!(Instant::now() < deadline, "still unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.append(record(1)).await, Ok(1));
    log.shutdown().await;
    assert_eq!(verify(&[path]).unwrap().records, 1);
}

#[tokio::test]
async fn failed_write_is_cut_off_and_the_chain_does_not_advance() {
    let dir = TempDir::new("write-failure");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    append_n(&log, 0..3).await;
    let committed = read_records(&path).unwrap().len() as u64;

    log.shared.fail_next_write.store(true, Ordering::SeqCst);
    assert_eq!(log.append(record(3)).await, Err(AuditError::Unavailable));
    assert!(!log.is_healthy());
    // Half a line is on disk now, over the padding.
    let mut byte = [0u8; 1];
    fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut byte, committed)
        .unwrap();
    assert_eq!(byte, *b"{");

    assert_eq!(log.append(record(4)).await, Ok(4));
    assert!(log.is_healthy());
    log.shutdown().await;
    assert_eq!(
        verify(&[path]).unwrap(),
        VerifyReport {
            records: 4,
            files: 1,
            torn_tail: false,
            system_events: 0,
            key_rotations: 0,
        }
    );
}

#[tokio::test]
async fn wrong_key_on_restart_keeps_the_log_unhealthy() {
    let dir = TempDir::new("wrong-key");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    append_n(&log, 0..2).await;
    log.shutdown().await;
    let before = fs::read(&path).unwrap();

    let log = AuditLog::start(AuditSettings {
        path: path.clone(),
        key: b"another key".to_vec().into(),
        previous_keys: Vec::new(),
        max_file_bytes: AuditSettings::DEFAULT_MAX_FILE_BYTES,
    });
    assert!(!log.is_healthy());
    assert_eq!(log.append(record(2)).await, Err(AuditError::Unavailable));
    log.shutdown().await;
    assert_eq!(fs::read(&path).unwrap(), before);
}

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

/// A crash can cut the last record at any byte, with the padding of the preallocated file
/// after it (or, in a file written before preallocation, nothing): verification accepts
/// the complete records and reports the torn tail; start-up pads over the torn bytes and
/// continues the chain.
#[tokio::test]
async fn a_last_record_cut_at_every_byte_is_reported_and_recovered() {
    const MAX: u64 = 8192;
    let dir = TempDir::new("cut-every-byte");
    let path = dir.path("audit.jsonl");
    let log = AuditLog::start(settings(&path, MAX));
    append_n(&log, 0..3).await;
    log.shutdown().await;
    let text = read_records(&path).unwrap();
    let last_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let padded = fs::read(&path).unwrap();
    assert_eq!(padded.len() as u64, MAX);

    for cut in last_start..=text.len() {
        let torn = cut > last_start && cut < text.len();
        let records = if cut == text.len() { 3 } else { 2 };
        for with_padding in [true, false] {
            let mut bytes = text.as_bytes()[..cut].to_vec();
            if with_padding {
                bytes.resize(padded.len(), 0);
            }
            fs::write(&path, &bytes).unwrap();
            let report = verify(std::slice::from_ref(&path))
                .unwrap_or_else(|e| panic!("cut at {cut}, padding {with_padding}: {e}"));
            let expected = VerifyReport {
                records,
                files: 1,
                torn_tail: torn,
                system_events: 0,
                key_rotations: 0,
            };
            assert_eq!(report, expected, "cut at {cut}, padding {with_padding}");
        }
        // Start-up on the padded file: the torn bytes become padding, the chain continues.
        let mut bytes = text.as_bytes()[..cut].to_vec();
        bytes.resize(padded.len(), 0);
        fs::write(&path, &bytes).unwrap();
        let log = AuditLog::start(settings(&path, MAX));
        assert_eq!(log.append(record(9)).await, Ok(records + 1), "cut at {cut}");
        log.shutdown().await;
        let report = verify(std::slice::from_ref(&path)).unwrap();
        assert_eq!((report.records, report.torn_tail), (records + 1, false));
        let end = read_records(&path).unwrap().len() as u64;
        assert_padding(&path, end, MAX);
    }
}

/// Sectors of an unacknowledged group can reach the disk out of order: a torn record,
/// padding, then stray record bytes. Everything after the first incomplete line is the
/// unwritten tail: reported, accepted, and padded over on start-up.
#[tokio::test]
async fn stray_bytes_after_a_torn_record_are_the_tail() {
    let dir = TempDir::new("stray");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    append_n(&log, 0..4).await;
    log.shutdown().await;
    let end = read_records(&path).unwrap().len() as u64;
    write_at(&path, end, b"{\"seq\":5,\"ts\"");
    write_at(&path, end + 4096, b"\"prev\":\"00\"}\n{\"seq\":6}\n");

    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((report.records, report.torn_tail), (4, true));
    let pending = pending_in(std::slice::from_ref(&path)).unwrap();
    assert_eq!((pending.records, pending.unreadable), (4, 0));

    let log = start(&path);
    assert!(log.is_healthy());
    assert_padding(&path, end, end + 8192);
    assert_eq!(append_n(&log, 4..6).await, vec![5, 6]);
    log.shutdown().await;
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((report.records, report.torn_tail), (6, false));
}

/// Padding is written ahead of the records (off the commit path), so a record's write
/// never makes the file longer until the rotation size is reached.
#[tokio::test]
async fn the_file_is_preallocated_ahead_of_the_records() {
    let dir = TempDir::new("prealloc");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    let len_at_start = fs::metadata(&path).unwrap().len();
    assert!(len_at_start >= 64 * 1024, "{len_at_start}");
    append_n(&log, 0..20).await;
    log.shutdown().await;
    let len = fs::metadata(&path).unwrap().len();
    assert!(len > 2 * 1024 * 1024, "a step of padding ahead: {len}");
    let end = read_records(&path).unwrap().len() as u64;
    assert_padding(&path, end, len);
    assert_eq!(verify(std::slice::from_ref(&path)).unwrap().records, 20);
}

/// A disk too full to preallocate the file: the log is unavailable (payments get 503),
/// and comes back on its own once there is room.
#[tokio::test]
async fn a_failed_preallocation_makes_the_log_unavailable_until_it_succeeds() {
    let dir = TempDir::new("prealloc-full");
    let path = dir.path("audit.jsonl");
    let log = start(&path);
    append_n(&log, 0..2).await;
    log.shared.fail_prealloc.store(true, Ordering::SeqCst);
    // A failed write makes the writer reopen the file, which needs its padding.
    log.shared.fail_next_write.store(true, Ordering::SeqCst);
    assert_eq!(log.append(record(2)).await, Err(AuditError::Unavailable));
    assert_eq!(log.append(record(3)).await, Err(AuditError::Unavailable));
    assert!(!log.is_healthy());

    log.shared.fail_prealloc.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.is_healthy() {
        assert!(Instant::now() < deadline, "still unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.append(record(4)).await, Ok(3));
    log.shutdown().await;
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert_eq!((report.records, report.torn_tail), (3, false));
}

/// A rotated file is cut to its last record, but one left padded (a crash during the
/// rotation, an older build) still verifies; record bytes after its last record do not,
/// since only the last file can hold a write that was cut short.
#[tokio::test]
async fn padding_in_a_rotated_file_verifies_a_torn_record_there_does_not() {
    let dir = TempDir::new("rotated-padding");
    let path = dir.path("audit.jsonl");
    let log = AuditLog::start(settings(&path, 1500));
    append_n(&log, 0..10).await;
    log.shutdown().await;
    let files = chain_files(&path).unwrap();
    assert!(files.len() >= 2, "{files:?}");
    let first = &files[0];
    let len = fs::metadata(first).unwrap().len();

    write_at(first, len, &[0; 300]);
    let report = verify(&files).unwrap();
    assert_eq!((report.records, report.torn_tail), (10, false));

    write_at(first, len + 100, b"{\"seq\":");
    let err = verify(&files).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
    assert_eq!(err.file(), first.as_path());
}
