//! No double charge (issue 15): `Idempotency-Key`, one payment per order in flight and the
//! duplicate window, through a real payshim (in process, TLS) to the upstream double.
//!
//! Every case counts what reached the upstream: a replay or a refusal forwards nothing.
//! The card-data case scans every answer and the audit file for the PAN and the CVV.

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use serde_json::{Value, json};

use support::cards::{audit_verify, find_cvvs, find_pans};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, payment_body, set_key};
use support::{HttpVersion, Reply, TestResponse, World, handler};

const PAN: &str = "4111111111111111";
const CVV: &str = "123";
const TRANSACTION: &str = "5e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b";

/// The double's answer to a payment: a complete transaction (or `status`).
fn answer(status: &str) -> Reply {
    Reply::json(
        201,
        json!({"data": {"type": "transaction", "id": TRANSACTION,
            "gateway": "card_connect", "status": status}}),
    )
}

/// A world whose upstream answers a complete transaction after `delay`, and payshim on it
/// with `window` as `idempotency.duplicate_window` and one payment per order in flight.
async fn start(delay: Duration, window: &str) -> (World, Payshim) {
    let world = World::new(handler(move |_| answer("complete").delayed(delay))).await;
    let window = format!("\"{window}\"");
    let config = set_key(
        &world.base_config(),
        "idempotency",
        "duplicate_window",
        Some(&window),
    );
    // The shared test config turns this off; here it is what is tested.
    let config = set_key(
        &config,
        "idempotency",
        "one_payment_per_order",
        Some("true"),
    );
    let payshim = Payshim::start(&config).await;
    (world, payshim)
}

/// A card payment for `order` with `pan`, with an `Idempotency-Key` when given.
fn pay_request(payshim: &Payshim, order: &str, pan: &str, key: Option<&[u8]>) -> Request<Bytes> {
    let body = payment_body().replace(PAN, pan);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(payshim.url(&format!("/v2/orders/{order}/payments")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"));
    if let Some(key) = key {
        req = req.header(
            "idempotency-key",
            HeaderValue::from_bytes(key).expect("header"),
        );
    }
    req.body(Bytes::from(body)).expect("request")
}

async fn send(payshim: &Payshim, req: Request<Bytes>) -> TestResponse {
    tokio::time::timeout(
        Duration::from_secs(15),
        payshim.client(HttpVersion::Http1).send(req),
    )
    .await
    .expect("payshim answered within 15 s")
    .expect("request")
}

async fn pay(payshim: &Payshim, pan: &str, key: Option<&[u8]>) -> TestResponse {
    send(payshim, pay_request(payshim, ORDER, pan, key)).await
}

fn audit_text(world: &World) -> String {
    std::fs::read_to_string(world.audit.path().join("payshim.jsonl")).unwrap_or_default()
}

fn audit_events(world: &World) -> Vec<Value> {
    audit_text(world)
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// No PAN and no CVV in `hay` (a response or a file).
fn assert_no_card_data(what: &str, hay: &[u8]) {
    let pans: HashSet<String> = [PAN.to_string()].into();
    let cvvs: HashSet<String> = [CVV.to_string()].into();
    assert!(find_pans(hay, &pans).is_empty(), "{what} holds the PAN");
    assert!(find_cvvs(hay, &cvvs).is_empty(), "{what} holds the CVV");
}

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
async fn two_payments_for_one_order_at_once_forward_one() {
    let (world, payshim) = start(Duration::from_millis(500), "off").await;
    let (a, b) = tokio::join!(
        pay(&payshim, PAN, None),
        pay(&payshim, "5555555555554444", None)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.text(), b.text());
    assert_eq!(world.upstream.count(), 1);
    // Once the first is done, the order takes payments again.
    assert_eq!(pay(&payshim, "5555555555554444", None).await.status, 201);
    assert_eq!(world.upstream.count(), 2);
}

#[tokio::test]
async fn duplicate_window_replays_a_successful_payment_only() {
    let (world, payshim) = start(Duration::ZERO, "10min").await;
    let first = pay(&payshim, PAN, None).await;
    assert_eq!(first.status, 201);
    let double = pay(&payshim, PAN, None).await;
    assert_eq!(
        double.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(double.body, first.body);
    assert_eq!(
        world.upstream.count(),
        1,
        "a double submit is not charged again"
    );
    // Another card (the API's payment body has no amount): a new payment.
    assert_eq!(pay(&payshim, "5555555555554444", None).await.status, 201);
    assert_eq!(world.upstream.count(), 2);
    // After a failed transaction, the retry goes through (every time).
    world.upstream.set_handler(handler(|_| answer("failed")));
    let card = "378282246310005";
    for n in 3..=4 {
        let body = payment_body().replace(PAN, card).replace(CVV, "1234");
        let req = pay_request(&payshim, ORDER, PAN, None);
        let (parts, _) = req.into_parts();
        let resp = send(&payshim, Request::from_parts(parts, Bytes::from(body))).await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        assert_eq!(resp.header("idempotent-replayed"), None);
        assert_eq!(world.upstream.count(), n);
    }
}

#[tokio::test]
async fn duplicate_window_off_forwards_every_payment() {
    let (world, payshim) = start(Duration::ZERO, "off").await;
    for n in 1..=2 {
        assert_eq!(pay(&payshim, PAN, None).await.status, 201);
        assert_eq!(world.upstream.count(), n);
    }
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
