//! The records around the upstream call: `payment.forwarded` is written before the
//! upstream sees the payment, and a storefront that disconnects mid-payment still gets its
//! `payment.completed` record.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{chain, fingerprint, payment, payment_request, records};
use crate::support;
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, base_config};
use support::{HttpVersion, TestPki, Upstream, handler, moltin_like};

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
