//! The audit log end to end (issue 3), through the real server and the
//! real binary: the chain verifies after concurrent load (across rotated files), any edited,
//! deleted or reordered line is named by `payshim audit verify`, a SIGKILL during load leaves
//! files that verify with nothing forwarded before its durable record, and an unwritable
//! audit directory gives 503, failed readiness and an error line, never silence.
//!
//! The writer's own unit tests (tamper, rotation, torn tail, concurrency) are in
//! src/audit/tests.rs.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Method, Request};
use serde_json::{Value, json};
use sha2::Sha256;

use support::cards::{BRANDS, Binary, audit_verify, pan, utc_year_month};
use support::payshim::{
    AUDIT_KEY, ORDER, Payshim, STOREFRONT_KEY, admin_get, base_config, set_key,
};
use support::{HttpVersion, TestClient, TestPki, Upstream, handler, moltin_like};

/// A valid payment for card number `n` (brands cycle with `n`).
fn payment(n: u64) -> (String, String) {
    let brand = BRANDS[(n as usize) % BRANDS.len()];
    let number = pan(brand, n);
    let cvv = if brand.cvv_len == 4 { "7373" } else { "737" };
    let body = json!({
        "data": {
            "gateway": "card_connect",
            "method": "purchase",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "number": number,
            "month": "9",
            "year": (utc_year_month().0 + 2).to_string(),
            "verification_value": cvv,
        }
    })
    .to_string();
    (number, body)
}

/// A payment refused by validation (Luhn failure).
fn invalid_payment(n: u64) -> String {
    let (number, body) = payment(n);
    let broken = support::cards::luhn_broken(&number);
    body.replace(&number, &broken)
}

fn payment_request(base_url: &str, body: &str) -> Request<Bytes> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("{base_url}/v2/orders/{ORDER}/payments"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::copy_from_slice(body.as_bytes()))
        .expect("build request")
}

/// Hex HMAC-SHA-256(audit key, PAN): a record's card fingerprint.
fn fingerprint(pan: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(AUDIT_KEY.as_bytes()).unwrap();
    mac.update(pan.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The complete lines of the chain's files (oldest first), parsed.
fn records(files: &[PathBuf]) -> Vec<Value> {
    let mut out = Vec::new();
    for file in files {
        let text = payshim::audit::read_records(file).expect("read audit file");
        for line in text.split_inclusive('\n') {
            if line.ends_with('\n') {
                out.push(serde_json::from_str(line).expect("audit line is JSON"));
            }
        }
    }
    out
}

fn chain(audit_path: &Path) -> Vec<PathBuf> {
    payshim::audit::chain_files(audit_path).expect("list audit files")
}

/// Checks the pairing of a finished run: seq 1..=N in order; every forwarded record has one
/// completed record with the same request id after it; returns the event counts.
fn check_pairing(records: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut forwarded: HashMap<String, u64> = HashMap::new();
    let mut completed: HashSet<String> = HashSet::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1, "seq order: {r}");
        let event = r["event"].as_str().unwrap().to_string();
        let Some(id) = r["request_id"].as_str().map(str::to_string) else {
            // A system record (start, stop): counted, nothing to pair.
            *counts.entry(event).or_insert(0) += 1;
            continue;
        };
        match event.as_str() {
            "payment.forwarded" => {
                assert!(
                    forwarded.insert(id, i as u64).is_none(),
                    "two forwarded: {r}"
                );
            }
            "payment.completed" => {
                assert!(
                    forwarded.contains_key(&id),
                    "completed before (or without) its forwarded record: {r}"
                );
                assert!(completed.insert(id), "two completed: {r}");
            }
            _ => {}
        }
        *counts.entry(event).or_insert(0) += 1;
    }
    assert_eq!(
        forwarded.len(),
        completed.len(),
        "every forwarded payment has its completed record"
    );
    counts
}

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

/// Writes `lines` (each without its newline) as a file and runs `payshim audit verify` on it:
/// it must fail (exit 2) naming `line`; `verify_files` must agree.
fn assert_verify_fails_at(config: &Path, dir: &Path, name: &str, lines: &[String], line: u64) {
    let file = dir.join(format!("{name}.jsonl"));
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&file, text).unwrap();
    let out = audit_verify(config, std::slice::from_ref(&file));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name}: audit verify must fail; stdout {} stderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let needle = format!("FAILED: {}: line {line}:", file.display());
    assert!(
        stderr.contains(&needle),
        "{name}: expected {needle:?} in {stderr:?}"
    );
    let err = payshim::audit::verify_files(std::slice::from_ref(&file), AUDIT_KEY.as_bytes())
        .expect_err(name);
    assert_eq!(err.line(), line, "{name}: {err}");
}

#[tokio::test]
async fn edited_deleted_or_reordered_lines_are_named_by_audit_verify() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let audit_path = audit_dir.join("payshim.jsonl");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    let payshim = Payshim::start(&config).await;
    let client = payshim.client(HttpVersion::Http1);
    for k in 0..12u64 {
        let body = if k % 3 == 2 {
            invalid_payment(k)
        } else {
            payment(k).1
        };
        let resp = client
            .send(payment_request(&payshim.url(""), &body))
            .await
            .unwrap();
        assert!(resp.status == 201 || resp.status == 400, "{}", resp.text());
    }
    payshim.stop().await;
    let config_path = dir.path().join("payshim.toml");
    std::fs::write(&config_path, &config).unwrap();

    let original: Vec<String> = payshim::audit::read_records(&audit_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let n = original.len();
    assert_eq!(
        n,
        1 + 8 * 2 + 4 + 1,
        "start, 8 forwarded + completed, 4 rejected, stop"
    );
    // Untouched, it verifies.
    let out = audit_verify(&config_path, std::slice::from_ref(&audit_path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("OK: {n} records")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // One byte changed (a hex digit of the request id, so the line is still valid JSON).
    let edit = |lines: &[String], k: usize| -> Vec<String> {
        let mut out = lines.to_vec();
        let at = out[k].find("\"request_id\":\"").unwrap() + "\"request_id\":\"".len();
        let mut bytes = out[k].clone().into_bytes();
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        out[k] = String::from_utf8(bytes).unwrap();
        out
    };
    let d = dir.path();
    // Lines 1 and n are the start and stop records, which have no request id.
    for k in [1, 6, n / 2, n - 2] {
        assert_verify_fails_at(
            &config_path,
            d,
            &format!("edit-{k}"),
            &edit(&original, k),
            k as u64 + 1,
        );
    }
    // One byte of the mac itself.
    let mut mac_edit = original.clone();
    let line = &mut mac_edit[4];
    let at = line.len() - 3;
    let replacement = if &line[at..at + 1] == "a" { "b" } else { "a" };
    line.replace_range(at..at + 1, replacement);
    assert_verify_fails_at(&config_path, d, "edit-mac-5", &mac_edit, 5);
    // A line deleted: the line now in its place fails.
    for k in [0, 3, n / 2, n - 2] {
        let mut deleted = original.clone();
        deleted.remove(k);
        assert_verify_fails_at(
            &config_path,
            d,
            &format!("delete-{k}"),
            &deleted,
            k as u64 + 1,
        );
    }
    // Two lines swapped: the first of them fails.
    for k in [0, 7, n - 2] {
        let mut swapped = original.clone();
        swapped.swap(k, k + 1);
        assert_verify_fails_at(
            &config_path,
            d,
            &format!("swap-{k}"),
            &swapped,
            k as u64 + 1,
        );
    }
    // Two distant lines swapped.
    let mut far = original.clone();
    far.swap(2, n - 3);
    assert_verify_fails_at(&config_path, d, "swap-far", &far, 3);
    // A line repeated (a replayed record).
    let mut repeated = original.clone();
    repeated.insert(9, original[8].clone());
    assert_verify_fails_at(&config_path, d, "repeat-9", &repeated, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_load_leaves_a_verifiable_log_and_nothing_forwarded_unrecorded() {
    let pki = TestPki::new();
    // A little upstream latency keeps payments in flight when the process dies.
    let inner = moltin_like();
    let upstream = Upstream::start(
        &pki,
        handler(move |req| inner(req).delayed(Duration::from_millis(5))),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let audit_path = audit_dir.join("payshim.jsonl");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    // Info level: `Binary::start` reads the bound addresses from the serving line.
    let config = set_key(&config, "log", "level", Some("\"info\""));
    let mut binary = Binary::start(dir.path(), "first", &config).await;
    let base_url = binary.url("");

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let client = TestClient::new(
                &pki.ca_pem,
                if t % 2 == 0 {
                    HttpVersion::Http1
                } else {
                    HttpVersion::Http2
                },
            );
            let (stop, next, base_url) = (stop.clone(), next.clone(), base_url.clone());
            tokio::spawn(async move {
                // (card number, status) of every answered payment.
                let mut answered = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let k = next.fetch_add(1, Ordering::SeqCst) as u64;
                    if k >= 2_000 {
                        break;
                    }
                    let (number, body) = payment(k);
                    let req = payment_request(&base_url, &body);
                    match tokio::time::timeout(Duration::from_secs(5), client.send(req)).await {
                        Ok(Ok(resp)) => answered.push((number, resp.status)),
                        _ => {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                    }
                }
                answered
            })
        })
        .collect();
    // Kill once a fair number of payments went through, mid-stream.
    assert!(
        upstream
            .wait_for_requests(60, Duration::from_secs(20))
            .await,
        "load did not get going\n{}",
        binary.output()
    );
    binary.signal("KILL");
    let status = binary.wait_exit(Duration::from_secs(5)).await;
    assert!(!status.success(), "killed: {status}");
    stop.store(true, Ordering::SeqCst);
    let mut answered = Vec::new();
    for task in tasks {
        answered.extend(task.await.unwrap());
    }
    let ok: Vec<&String> = answered
        .iter()
        .filter(|(_, s)| (200..300).contains(s))
        .map(|(n, _)| n)
        .collect();
    assert!(!ok.is_empty());

    // Every complete line verifies (an incomplete last line is allowed).
    let files = chain(&audit_path);
    let report = payshim::audit::verify_files(&files, AUDIT_KEY.as_bytes())
        .unwrap_or_else(|e| panic!("after SIGKILL: {e}"));
    let all = records(&files);
    assert_eq!(all.len() as u64, report.records);
    let forwarded: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"] == "payment.forwarded")
        .collect();
    for r in &forwarded {
        assert!(r["seq"].as_u64().unwrap() <= report.records, "{r}");
    }
    let forwarded_fps: HashSet<&str> = forwarded
        .iter()
        .map(|r| r["card"]["fingerprint"].as_str().unwrap())
        .collect();
    // Nothing answered 2xx, and nothing that reached the upstream, lacks its durable record.
    assert!(
        ok.len() <= forwarded.len(),
        "{} payments answered 2xx, {} forwarded records",
        ok.len(),
        forwarded.len()
    );
    for number in &ok {
        assert!(
            forwarded_fps.contains(fingerprint(number).as_str()),
            "payment answered 2xx without a forwarded record"
        );
    }
    let received = upstream.requests();
    for req in &received {
        let number = req.json()["data"]["number"].as_str().unwrap().to_string();
        assert!(
            forwarded_fps.contains(fingerprint(&number).as_str()),
            "the upstream received a payment with no forwarded record"
        );
    }
    assert!(received.len() <= forwarded.len());
    eprintln!(
        "SIGKILL: {} answered 2xx, {} received upstream, {} forwarded records, {} records, torn tail {}",
        ok.len(),
        received.len(),
        forwarded.len(),
        report.records,
        report.torn_tail
    );

    // Restarted on the same log, payshim continues the chain.
    let mut again = Binary::start(dir.path(), "second", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    for k in 10_000..10_010u64 {
        let resp = client
            .send(payment_request(&again.url(""), &payment(k).1))
            .await
            .unwrap_or_else(|e| panic!("after restart: {e}\n{}", again.output()));
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    again.stop().await;
    let files = chain(&audit_path);
    let after = payshim::audit::verify_files(&files, AUDIT_KEY.as_bytes())
        .unwrap_or_else(|e| panic!("after restart: {e}"));
    // 10 payments, and the restart's start and stop records.
    assert_eq!(after.records, report.records + 22);
    assert!(!after.torn_tail);
    let out = audit_verify(&again.config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn unwritable_audit_directory_is_503_and_not_ready() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    // The audit directory's parent is a regular file: no one, root included, can create it.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file").unwrap();
    let audit_dir = blocker.join("audit");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    // Info level: `Binary::start` reads the bound addresses from the serving line.
    let config = set_key(&config, "log", "level", Some("\"info\""));

    let payshim = Payshim::start(&config).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = payshim
            .client(version)
            .send(payment_request(&payshim.url(""), &payment(1).1))
            .await
            .unwrap();
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(
            resp.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json")
        );
        let json = resp.json();
        assert_eq!(json["errors"][0]["status"], 503, "{json}");
        assert_eq!(
            json["errors"][0]["request_id"].as_str(),
            resp.header("x-request-id").as_deref(),
            "{json}"
        );
    }
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit"), "{body}");
    let (status, _) = admin_get(payshim.admin, "/healthz").await;
    assert_eq!(status, 200, "alive, just not ready");
    payshim.stop().await;
    assert_eq!(
        upstream.count(),
        0,
        "nothing forwarded without its audit record"
    );
    assert!(!audit_dir.exists());

    // The binary says so in its log, at error level.
    let mut binary = Binary::start(dir.path(), "unwritable", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let resp = client
        .send(payment_request(&binary.url(""), &payment(2).1))
        .await
        .unwrap();
    assert_eq!(resp.status, 503);
    let (status, _) = admin_get(binary.admin, "/readyz").await;
    assert_eq!(status, 503);
    binary.stop().await;
    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("audit")),
        "no error line about the audit log:\n{stdout}"
    );
    assert_eq!(upstream.count(), 0);
}

/// A storefront that disconnects while its payment is at the upstream: the payment still
/// runs to its end and gets its `payment.completed` record (hyper drops the request's
/// future on disconnect; the upstream part must not be dropped with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_payment_still_completes_the_audit_pair() {
    use support::load::{ALPN_H1, tls_connect};
    use tokio::io::AsyncWriteExt;

    let pki = TestPki::new();
    let answer = support::Reply::json(
        201,
        json!({"data": {"id": "txn-disconnect-1", "status": "complete"}}),
    );
    let upstream = Upstream::start(
        &pki,
        handler(move |_| {
            support::Reply::Delay(Duration::from_millis(800), Box::new(answer.clone()))
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let payshim = Payshim::start(&base_config(&pki, &upstream.url(), &audit_dir)).await;

    let body = payment(7).1;
    let head = format!(
        "POST /v2/orders/{ORDER}/payments HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {STOREFRONT_KEY}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let mut tls = tls_connect(
        payshim.addr,
        &payshim.ca_pem,
        ALPN_H1,
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert!(upstream.wait_for_requests(1, Duration::from_secs(5)).await);
    drop(tls); // the storefront goes away while the upstream is still answering

    let audit_path = audit_dir.join("payshim.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let completed = loop {
        let all = records(&chain(&audit_path));
        if let Some(c) = all.iter().find(|r| r["event"] == "payment.completed") {
            break c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no payment.completed: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(completed["outcome"], "approved", "{completed}");
    assert_eq!(
        completed["transaction_id"], "txn-disconnect-1",
        "{completed}"
    );
    assert_eq!(completed["upstream_status"], 201, "{completed}");
    // The upstream held its answer for 800 ms, and latency_ms measures up to its head.
    let latency_ms = completed["latency_ms"].as_f64();
    assert!(
        latency_ms.is_some_and(|ms| (800.0..10_000.0).contains(&ms)),
        "latency_ms: {completed}"
    );
    assert_eq!(upstream.count(), 1, "sent exactly once");
    payshim.stop().await;
}

/// `payment.forwarded` is in the audit file before the upstream sees the payment: the
/// upstream double looks for the record (by card fingerprint) the moment each payment
/// arrives. (Its durability is the unit test `an_append_resolves_only_after_its_sync`.)
#[tokio::test]
async fn the_forwarded_record_is_written_before_the_upstream_call() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let audit_path = audit_dir.join("payshim.jsonl");
    let seen: Arc<std::sync::Mutex<Vec<bool>>> = Arc::default();
    let upstream_handler = {
        let (seen, audit_path, inner) = (seen.clone(), audit_path.clone(), moltin_like());
        handler(move |req| {
            if req.path.ends_with("/payments") {
                let number = serde_json::from_slice::<Value>(&req.body)
                    .ok()
                    .and_then(|v| v["data"]["number"].as_str().map(str::to_owned))
                    .expect("a card number in the forwarded body");
                let fp = fingerprint(&number);
                let written = std::fs::read_to_string(&audit_path)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .any(|r| r["event"] == "payment.forwarded" && r["card"]["fingerprint"] == fp);
                seen.lock().unwrap().push(written);
            }
            inner(req)
        })
    };
    let upstream = Upstream::start(&pki, upstream_handler).await;
    let payshim = Payshim::start(&base_config(&pki, &upstream.url(), &audit_dir)).await;
    let client = payshim.client(HttpVersion::Http2);
    for n in 0..8 {
        let resp = client
            .send(payment_request(&payshim.url(""), &payment(n).1))
            .await
            .unwrap();
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    payshim.stop().await;
    assert_eq!(*seen.lock().unwrap(), vec![true; 8]);
}
