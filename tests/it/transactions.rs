//! Capture, refund and cancel (issue 3): money moves, so they are
//! audited like payments. `transaction.forwarded` is written before the upstream call and
//! `transaction.completed` after it, each with the order, the transaction and the action;
//! a refused action is `transaction.rejected` and never reaches the upstream. The chain
//! verifies afterwards.

use crate::support;

use std::path::Path;

use bytes::Bytes;
use http::Request;
use serde_json::Value;

use support::cards::audit_verify;
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, base_config};
use support::{HttpVersion, TestPki, Upstream, moltin_like};

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

fn audit_records(path: &Path) -> Vec<Value> {
    payshim::audit::read_records(path)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
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
