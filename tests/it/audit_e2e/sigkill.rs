//! A SIGKILL of the real binary during load: the files still verify (an incomplete last
//! line allowed), nothing answered 2xx or received upstream lacks its forwarded record,
//! and a restart on the same log continues the chain.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{chain, fingerprint, payment, payment_request, records};
use crate::support;
use support::cards::{Binary, audit_verify};
use support::payshim::{AUDIT_KEY, base_config, set_key};
use support::{HttpVersion, TestClient, TestPki, Upstream, handler, moltin_like};

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
