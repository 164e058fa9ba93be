//! The NUL-padded file: torn records, stray bytes, padding ahead and in rotated files.

use super::*;

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
