//! The chain across restarts, torn tails, rotation and failed writes.

use super::*;

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
