//! The chain verifies after concurrent load: 16 tasks, half HTTP/1.1 and half HTTP/2, pay
//! through small audit files that rotate several times; every payment's forwarded and
//! completed records pair up, and `payshim audit verify` agrees.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    chain, check_pairing, fingerprint, invalid_payment, payment, payment_request, records,
};
use crate::support;
use support::cards::audit_verify;
use support::payshim::{AUDIT_KEY, Payshim, base_config, set_key};
use support::{HttpVersion, TestPki, Upstream, moltin_like};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chain_verifies_after_concurrent_load_across_rotations() {
    const PAYMENTS: u64 = 200;
    const INVALID: u64 = 24;
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let audit_path = audit_dir.join("payshim.jsonl");
    // Small files, so the load rotates several times and the chain must run across them.
    let config = set_key(
        &base_config(&pki, &upstream.url(), &audit_dir),
        "audit",
        "max_file_size",
        Some("\"16KiB\""),
    );
    let payshim = Payshim::start(&config).await;
    let base_url = payshim.url("");

    // 16 tasks, half HTTP/1.1 and half HTTP/2; request k is valid unless k >= PAYMENTS.
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let client = payshim.client(if t % 2 == 0 {
                HttpVersion::Http1
            } else {
                HttpVersion::Http2
            });
            let next = next.clone();
            let base_url = base_url.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst) as u64;
                    if k >= PAYMENTS + INVALID {
                        return got;
                    }
                    let body = if k < PAYMENTS {
                        payment(k).1
                    } else {
                        invalid_payment(k)
                    };
                    let resp = client
                        .send(payment_request(&base_url, &body))
                        .await
                        .unwrap_or_else(|e| panic!("payment {k}: {e}"));
                    got.push((k, resp.status));
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }
    for (k, status) in &statuses {
        let want = if *k < PAYMENTS { 201 } else { 400 };
        assert_eq!(*status, want, "payment {k}");
    }
    assert_eq!(upstream.count() as u64, PAYMENTS);
    // Stopping writes every queued record (completions are written after the answer).
    payshim.stop().await;

    let files = chain(&audit_path);
    assert!(files.len() > 2, "expected rotations: {files:?}");
    let report = payshim::audit::verify_files(&files, AUDIT_KEY.as_bytes())
        .unwrap_or_else(|e| panic!("verify: {e}"));
    // Each payment's forwarded and completed, each rejection, the start and the stop.
    let expected = 2 * PAYMENTS + INVALID + 2;
    assert_eq!(report.records, expected);
    assert_eq!(report.system_events, 2);
    assert_eq!(report.files, files.len());
    assert!(!report.torn_tail);

    let all = records(&files);
    let counts = check_pairing(&all);
    assert_eq!(counts.get("payment.forwarded"), Some(&(PAYMENTS as usize)));
    assert_eq!(counts.get("payment.completed"), Some(&(PAYMENTS as usize)));
    assert_eq!(counts.get("payment.rejected"), Some(&(INVALID as usize)));
    // One forwarded record per card, with the card's keyed fingerprint.
    let fingerprints: HashSet<String> = all
        .iter()
        .filter(|r| r["event"] == "payment.forwarded")
        .map(|r| r["card"]["fingerprint"].as_str().unwrap().to_string())
        .collect();
    let expected_fps: HashSet<String> = (0..PAYMENTS).map(|k| fingerprint(&payment(k).0)).collect();
    assert_eq!(fingerprints, expected_fps);
    for r in all.iter().filter(|r| r["event"] == "payment.completed") {
        assert!(
            r["upstream_status"] == 201 && r["outcome"] == "approved",
            "completed record: {r}"
        );
        // The upstream call's duration, in (fractional) milliseconds.
        assert!(
            r["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "completed record without a numeric latency_ms: {r}"
        );
    }

    // The binary agrees: with no FILES it verifies the configured log and its rotations.
    let config_path = dir.path().join("payshim.toml");
    std::fs::write(&config_path, &config).unwrap();
    let out = audit_verify(&config_path, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("OK: {expected} records")),
        "{stdout}"
    );
    // And with the files listed explicitly, oldest first.
    let out = audit_verify(&config_path, &files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
