//! Capture, refund, cancel and confirm (issues 3 and 18): money moves, so they are
//! audited like payments. `transaction.forwarded` is written before the upstream call and
//! `transaction.completed` after it, each with the order, the transaction and the action;
//! a refused action is `transaction.rejected` and never reaches the upstream. The chain
//! verifies afterwards.

use crate::support;

use std::path::Path;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};

use support::cards::audit_verify;
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, admin_get, base_config};
use support::{HttpVersion, Reply, TestPki, Upstream, handler, moltin_like};

const TRANSACTION: &str = "3f2a1b0c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

fn action(payshim: &Payshim, action: &str, body: &str) -> Request<Bytes> {
    let mut req = Request::post(payshim.url(&format!(
        "/v2/orders/{ORDER}/transactions/{TRANSACTION}/{action}"
    )))
    .header("authorization", format!("Bearer {STOREFRONT_KEY}"));
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    req.body(Bytes::from(body.to_string())).unwrap()
}

/// The transaction and payment records of `path` (not the start and stop records, which
/// have no request id).
fn audit_records(path: &Path) -> Vec<Value> {
    payshim::audit::read_records(path)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect(l))
        .filter(|r| r.get("request_id").is_some())
        .collect()
}

#[tokio::test]
async fn capture_refund_cancel_are_audited_around_the_upstream_call() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    let config_path = dir.path().join("payshim.toml");
    std::fs::write(&config_path, &config).unwrap();
    let payshim = Payshim::start(&config).await;
    let client = payshim.client(HttpVersion::Http1);

    let actions = [
        ("capture", ""),
        ("refund", r#"{"data":{"amount":1250}}"#),
        ("cancel", ""),
    ];
    for (name, body) in actions {
        let resp = client.send(action(&payshim, name, body)).await.unwrap();
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }
    assert_eq!(upstream.count(), 3);
    // A refund whose body is not JSON is refused before anything is sent.
    let resp = client
        .send(action(&payshim, "refund", "{amount: lots"))
        .await
        .unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(
        upstream.count(),
        3,
        "the refused refund reached the upstream"
    );
    payshim.stop().await;

    let audit_path = audit_dir.join("payshim.jsonl");
    let records = audit_records(&audit_path);
    let position = |event: &str, name: &str| {
        records
            .iter()
            .position(|r| r["event"] == event && r["action"] == name)
            .unwrap_or_else(|| panic!("no {event} for {name} in {records:#?}"))
    };
    for (name, _) in actions {
        let forwarded = position("transaction.forwarded", name);
        let completed = position("transaction.completed", name);
        assert!(forwarded < completed, "{name}: completed before forwarded");
        for i in [forwarded, completed] {
            let r = &records[i];
            assert_eq!(r["order_id"], ORDER, "{r}");
            assert_eq!(r["transaction_id"], TRANSACTION, "{r}");
            assert_eq!(r["client_id"], "web-eu", "{r}");
        }
        let done = &records[completed];
        assert_eq!(done["upstream_status"], 200, "{done}");
        assert_eq!(done["outcome"], "approved", "{done}");
        assert!(done["latency_ms"].is_number(), "{done}");
    }
    let rejected = &records[position("transaction.rejected", "refund")];
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    assert!(rejected["reason"].is_string(), "{rejected}");
    assert!(rejected.get("upstream_status").is_none(), "{rejected}");
    assert_eq!(records.len(), 7, "3 × forwarded/completed + 1 rejected");

    let out = audit_verify(&config_path, &[audit_path]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The confirm route (after 3-D Secure or PayPal approval) end to end: validated, audited
/// and covered by idempotency like a capture; a capture with no body at all (as the SDK
/// sends it) passes; the API's 200 and 201 both come back unchanged.
#[tokio::test]
async fn confirm_and_bodyless_capture_with_200_and_201_answers() {
    let pki = TestPki::new();
    // Confirm answers 201 (the Elastic Path Payments guide), capture 200 (the spec).
    let upstream = Upstream::start(
        &pki,
        handler(|req| {
            let status = if req.path.ends_with("/confirm") { 201 } else { 200 };
            Reply::json(
                status,
                json!({"data": {"id": TRANSACTION, "type": "transaction", "status": "complete",
                                "transaction_type": "purchase", "gateway": "stripe_payment_intents"}}),
            )
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let payshim = Payshim::start(&base_config(&pki, &upstream.url(), &audit_dir)).await;
    let client = payshim.client(HttpVersion::Http2);

    // Capture exactly as the SDK sends it: no body, but a JSON content type.
    let bodyless = Request::post(payshim.url(&format!(
        "/v2/orders/{ORDER}/transactions/{TRANSACTION}/capture"
    )))
    .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
    .header("content-type", "application/json")
    .body(Bytes::new())
    .unwrap();
    let resp = client.send(bodyless).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["data"]["id"], TRANSACTION);

    for body in [
        r#"{"data":{}}"#,
        r#"{"data":{"gateway":"paypal_express_checkout"}}"#,
    ] {
        let resp = client
            .send(action(&payshim, "confirm", body))
            .await
            .unwrap();
        assert_eq!(resp.status, 201, "{body}: {}", resp.text());
        assert_eq!(resp.json()["data"]["status"], "complete");
    }
    let received = upstream.requests();
    assert_eq!(received.len(), 3);
    assert!(received[0].body.is_empty(), "the capture gained a body");
    assert!(
        received[1]
            .path
            .ends_with(&format!("{TRANSACTION}/confirm"))
    );
    assert_eq!(
        &received[2].body[..],
        br#"{"data":{"gateway":"paypal_express_checkout"}}"#
    );

    // Refused before the upstream, naming the member; the card number is never repeated.
    for (body, source) in [
        (r#"{"data":{"payment":"4111111111111111"}}"#, "data.payment"),
        (r#"{"data":{"amount":100}}"#, "data.amount"),
        (r#"{"data":{"gateway":"paypal"}}"#, "data.gateway"),
    ] {
        let resp = client
            .send(action(&payshim, "confirm", body))
            .await
            .unwrap();
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        assert_eq!(resp.json()["errors"][0]["source"], source, "{body}");
        assert!(!resp.text().contains("4111"), "{}", resp.text());
    }
    assert_eq!(
        upstream.count(),
        3,
        "a refused confirm reached the upstream"
    );

    // Idempotency covers confirm: the same key and body again is replayed, not resent.
    let keyed = |key: &str| {
        let mut req = action(&payshim, "confirm", r#"{"data":{}}"#);
        req.headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
        req
    };
    let first = client.send(keyed("confirm-key-1")).await.unwrap();
    assert_eq!(first.status, 201, "{}", first.text());
    let again = client.send(keyed("confirm-key-1")).await.unwrap();
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(upstream.count(), 4, "the replayed confirm was sent again");
    // The metrics name the route.
    let (status, metrics) = admin_get(payshim.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("route=\"confirm\"") && !l.starts_with('#')),
        "no confirm series in /metrics:\n{metrics}"
    );
    payshim.stop().await;

    let records = audit_records(&audit_dir.join("payshim.jsonl"));
    let count = |event: &str, action: &str| {
        records
            .iter()
            .filter(|r| r["event"] == event && r["action"] == action)
            .count()
    };
    assert_eq!(count("transaction.forwarded", "confirm"), 3, "{records:#?}");
    assert_eq!(count("transaction.completed", "confirm"), 3, "{records:#?}");
    assert_eq!(count("transaction.rejected", "confirm"), 3, "{records:#?}");
    assert_eq!(count("transaction.completed", "capture"), 1, "{records:#?}");
    let completed: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "transaction.completed")
        .collect();
    assert_eq!(completed[0]["upstream_status"], 200);
    assert_eq!(completed[1]["upstream_status"], 201);
    assert!(completed.iter().all(|r| r["outcome"] == "approved"));
    let text = std::fs::read_to_string(audit_dir.join("payshim.jsonl")).unwrap();
    assert!(
        !text.contains("4111111111111111"),
        "a card number in the audit log"
    );
}
