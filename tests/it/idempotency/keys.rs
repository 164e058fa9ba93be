//! `Idempotency-Key`: a reused key replays the stored answer (and forwards nothing), fifty
//! concurrent requests with one key charge once, the same key on another request is a 422,
//! malformed keys are 400s, and a transaction action with a key is replayed too.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::{
    PAN, TRANSACTION, answer, assert_metric, assert_no_card_data, audit_events, audit_text, pay,
    send, start,
};
use crate::support;
use support::cards::audit_verify;
use support::payshim::{ORDER, STOREFRONT_KEY, set_key};
use support::{World, handler};

#[tokio::test]
async fn sequential_reuse_replays_the_stored_answer() {
    let (world, payshim) = start(Duration::ZERO, "off").await;
    let first = pay(&payshim, PAN, Some(b"order-1-attempt")).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = pay(&payshim, PAN, Some(b"order-1-attempt")).await;
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body, "the replay is the same answer");
    assert_eq!(
        again.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(world.upstream.count(), 1, "the replay forwarded nothing");
    let first_id = first.header("x-request-id").expect("request id");
    let again_id = again.header("x-request-id").expect("request id");
    assert_ne!(first_id, again_id);
    assert_metric(&payshim, "replayed", 1).await;
    payshim.stop().await;
    let events = audit_events(&world);
    let replayed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "payment.replayed")
        .collect();
    assert_eq!(replayed.len(), 1, "{events:?}");
    assert_eq!(replayed[0]["request_id"], again_id.as_str());
    assert_eq!(replayed[0]["original_request_id"], first_id.as_str());
    for (name, body) in [("first", &first.body), ("replay", &again.body)] {
        assert_no_card_data(name, body);
    }
    assert_no_card_data("audit file", audit_text(&world).as_bytes());
    // The chain with its replayed record verifies.
    let config_path = world.audit.path().join("payshim.toml");
    std::fs::write(&config_path, world.base_config()).expect("config file");
    let out = audit_verify(&config_path, &[world.audit.path().join("payshim.jsonl")]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_key_charge_once() {
    let (world, payshim) = start(Duration::from_millis(300), "off").await;
    let payshim = std::sync::Arc::new(payshim);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let payshim = payshim.clone();
        tasks.push(tokio::spawn(async move {
            pay(&payshim, PAN, Some(b"one-key-for-all")).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let resp = t.await.expect("task");
        if resp.status == 409 {
            assert_eq!(resp.header("retry-after").as_deref(), Some("1"));
            assert_eq!(resp.json()["errors"][0]["status"], 409);
        }
        assert_no_card_data("answer", &resp.body);
        statuses.push(resp.status);
    }
    assert_eq!(world.upstream.count(), 1, "statuses {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&409), "{statuses:?}");
}

#[tokio::test]
async fn same_key_other_request_is_422_and_malformed_keys_are_400() {
    let (world, payshim) = start(Duration::ZERO, "off").await;
    assert_eq!(pay(&payshim, PAN, Some(b"k-1")).await.status, 201);
    let other = pay(&payshim, "5555555555554444", Some(b"k-1")).await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert_eq!(other.json()["errors"][0]["status"], 422);
    assert_eq!(world.upstream.count(), 1, "the 422 forwarded nothing");
    assert_metric(&payshim, "mismatch", 1).await;
    let long = vec![b'k'; 256];
    for key in [&b""[..], &long, "caf\u{e9}".as_bytes()] {
        let resp = pay(&payshim, PAN, Some(key)).await;
        assert_eq!(resp.status, 400, "{}", resp.text());
        let errors = resp.json()["errors"].clone();
        assert_eq!(errors[0]["source"], "header.Idempotency-Key", "{errors}");
        assert_no_card_data("400", &resp.body);
    }
    assert_eq!(
        world.upstream.count(),
        1,
        "a malformed key forwarded nothing"
    );
}

#[tokio::test]
async fn transaction_action_with_a_key_is_replayed() {
    let (world, payshim) = start(Duration::ZERO, "10min").await;
    let capture = || {
        Request::post(payshim.url(&format!(
            "/v2/orders/{ORDER}/transactions/{TRANSACTION}/capture"
        )))
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .header("idempotency-key", "capture-1")
        .body(Bytes::new())
        .expect("request")
    };
    let first = send(&payshim, capture()).await;
    let again = send(&payshim, capture()).await;
    assert_eq!(first.status, 201);
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
    let events = audit_events(&world);
    assert!(
        events.iter().any(|e| e["event"] == "transaction.replayed"),
        "{events:?}"
    );
}

#[tokio::test]
async fn idempotency_config_errors_name_the_key() {
    let world = World::new(handler(|_| answer("complete"))).await;
    let bad = set_key(
        &world.base_config(),
        "idempotency",
        "ttl",
        Some("\"forever\""),
    );
    let err = payshim::config::from_toml(&bad, &Default::default()).unwrap_err();
    assert_eq!(err.key, "idempotency.ttl");
}
