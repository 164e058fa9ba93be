//! No double charge (issue 15): `Idempotency-Key`, one payment per order in flight and the
//! duplicate window, through a real payshim (in process, TLS) to the upstream double.
//!
//! Every case counts what reached the upstream: a replay or a refusal forwards nothing.
//! The card-data checks scan the answers, the audit files, the real binary's logs and
//! every Redis entry (`SCAN` + `GET`) for the PAN and the CVV.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use serde_json::{Value, json};

use support::cards::{Binary, audit_verify, find_cvvs, find_pans};
use support::payshim::{
    ORDER, Payshim, STOREFRONT_KEY, admin_get, payment_body, set_key, toml_path,
};
use support::redis::RedisServer;
use support::upstream::transaction;
use support::{HttpVersion, Reply, TestClient, TestResponse, World, handler};

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
    payshim::audit::read_records(&world.audit.path().join("payshim.jsonl")).unwrap_or_default()
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

/// `payshim_idempotency_total{event}` is `n`.
async fn assert_metric(payshim: &Payshim, event: &str, n: u64) {
    let (status, text) = admin_get(payshim.admin, "/metrics").await;
    assert_eq!(status, 200);
    let line = format!("payshim_idempotency_total{{event=\"{event}\"}} {n}");
    assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
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
    assert_metric(&payshim, "order_in_flight", 1).await;
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

/// Every key payshim wrote to Redis and its value (all are strings).
fn redis_entries(url: &str) -> Vec<(String, String)> {
    let client = redis::Client::open(url).expect("redis client");
    let mut con = client.get_connection().expect("redis connection");
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.into_iter()
        .map(|k| {
            let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut con).expect("GET");
            (k, v.unwrap_or_default())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_redis_replay_each_others_keys() {
    let redis = RedisServer::start();
    let world = World::new(handler(|_| answer("complete"))).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let redis_url = format!("\"{}\"", redis.url());
    let config = set_key(
        &world.base_config(),
        "limits",
        "redis_url",
        Some(&redis_url),
    );
    let config = set_key(&config, "log", "level", Some("\"info\""));
    let config = set_key(
        &config,
        "idempotency",
        "one_payment_per_order",
        Some("true"),
    );
    let audit_b = dir.path().join("b.jsonl");
    let config_b = set_key(&config, "audit", "path", Some(&toml_path(&audit_b)));
    let mut a = Binary::start(dir.path(), "a", &config).await;
    let mut b = Binary::start(dir.path(), "b", &config_b).await;
    let client = TestClient::new(&world.pki.ca_pem, HttpVersion::Http1);
    let request = |url: &str, pan: &str, key: &str| {
        Request::post(format!("{url}/v2/orders/{ORDER}/payments"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
            .header("idempotency-key", key)
            .body(Bytes::from(payment_body().replace(PAN, pan)))
            .expect("request")
    };
    let first = client
        .send(request(&a.url(""), PAN, "shared-key-1"))
        .await
        .expect("payment on a");
    assert_eq!(first.status, 201, "{}\n{}", first.text(), a.output());
    let again = client
        .send(request(&b.url(""), PAN, "shared-key-1"))
        .await
        .expect("payment on b");
    assert_eq!(again.status, 201, "{}\n{}", again.text(), b.output());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body);
    let other = client
        .send(request(&b.url(""), "5555555555554444", "shared-key-1"))
        .await
        .expect("other payment on b");
    assert_eq!(other.status, 422, "{}", other.text());
    assert_eq!(
        world.upstream.count(),
        1,
        "one charge across both processes"
    );

    let entries = redis_entries(&redis.url());
    assert!(
        entries
            .iter()
            .any(|(k, _)| k.starts_with("payshim:idem:key:")),
        "{entries:?}"
    );
    for (key, value) in &entries {
        assert_no_card_data(key, key.as_bytes());
        assert_no_card_data(key, value.as_bytes());
    }
    a.stop().await;
    b.stop().await;
    for (name, body) in [("first", &first.body), ("replay", &again.body)] {
        assert_no_card_data(name, body);
    }
    for file in [&a.stdout, &a.stderr, &b.stdout, &b.stderr] {
        let text = std::fs::read(file).unwrap_or_default();
        assert_no_card_data(&file.display().to_string(), &text);
    }
    let audit_b_text = std::fs::read(&audit_b).unwrap_or_default();
    assert_no_card_data("audit of b", &audit_b_text);
    assert_no_card_data("audit of a", audit_text(&world).as_bytes());
    assert!(String::from_utf8_lossy(&audit_b_text).contains("payment.replayed"));
    // b's log line for the replay names the request it replayed.
    let first_id = first.header("x-request-id").expect("request id");
    let log_b = std::fs::read_to_string(&b.stdout).unwrap_or_default();
    assert!(
        log_b.contains(&format!("\"replay_of\":\"{first_id}\"")),
        "{log_b}"
    );
}

/// With Redis, a payment claims its key and its order in one script, all or nothing: the
/// payment refused for its order leaves its key free (a retry with it goes through once
/// the order is), and settling frees the order in the same round trip as the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_claims_key_and_order_together_and_frees_both() {
    let redis = RedisServer::start();
    let world = World::new(handler(|_| {
        answer("complete").delayed(Duration::from_millis(500))
    }))
    .await;
    let redis_url = format!("\"{}\"", redis.url());
    let config = set_key(
        &world.base_config(),
        "limits",
        "redis_url",
        Some(&redis_url),
    );
    let config = set_key(
        &config,
        "idempotency",
        "one_payment_per_order",
        Some("true"),
    );
    let payshim = Payshim::start(&config).await;
    let (a, b) = tokio::join!(
        pay(&payshim, PAN, Some(b"order-key-a")),
        pay(&payshim, "5555555555554444", Some(b"order-key-b")),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.text(), b.text());
    let (refused, pan, key) = match a.status {
        409 => (&a, PAN, b"order-key-a"),
        _ => (&b, "5555555555554444", b"order-key-b"),
    };
    assert!(
        refused.text().contains("order"),
        "refused for its order: {}",
        refused.text()
    );
    let orders = |entries: &[(String, String)]| {
        entries
            .iter()
            .filter(|(k, _)| k.starts_with("payshim:idem:order:"))
            .count()
    };
    let entries = redis_entries(&redis.url());
    assert_eq!(
        orders(&entries),
        0,
        "the order is freed with the key: {entries:?}"
    );
    let keys = entries
        .iter()
        .filter(|(k, _)| k.starts_with("payshim:idem:key:"))
        .count();
    assert_eq!(
        keys, 1,
        "only the charged payment's key is kept: {entries:?}"
    );
    // The refused key was never left claimed: its retry is forwarded, not held in flight.
    let retry = pay(&payshim, pan, Some(key)).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(world.upstream.count(), 2);
    assert_eq!(orders(&redis_entries(&redis.url())), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_deny_is_503_and_nothing_forwarded() {
    let mut redis = RedisServer::start();
    let world = World::new(handler(|_| answer("complete"))).await;
    let redis_url = format!("\"{}\"", redis.url());
    let config = set_key(
        &world.base_config(),
        "limits",
        "redis_url",
        Some(&redis_url),
    );
    let config = set_key(&config, "limits", "on_store_error", Some("\"deny\""));
    redis.stop();
    let payshim = Payshim::start(&config).await;
    let resp = pay(&payshim, PAN, Some(b"key-while-down")).await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(world.upstream.count(), 0);
}

/// POSTs (payments) the double received; its GETs are payshim reading transactions.
fn posts(world: &World) -> usize {
    world
        .upstream
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST)
        .count()
}

/// What the double's transaction list of the order says.
const LIST_EMPTY: u8 = 0;
const LIST_CHARGED: u8 = 1;
const LIST_FAILS: u8 = 2;

/// A world whose double stalls the first payment past `upstream.timeout` (2 s) and answers
/// later ones at once; the order's transaction list is as `list` says (`LIST_*`). With
/// `redis`, payshim keeps its keys there.
async fn stalling_world(list: Arc<AtomicU8>, redis: Option<&RedisServer>) -> (World, Payshim) {
    let stalled = Arc::new(AtomicBool::new(false));
    let world = World::new(handler(move |req| {
        if req.method == Method::GET {
            return match list.load(Ordering::SeqCst) {
                LIST_CHARGED => {
                    Reply::json(200, json!({ "data": [transaction(ORDER, "purchase")] }))
                }
                LIST_FAILS => Reply::status(500),
                _ => Reply::json(200, json!({ "data": [] })),
            };
        }
        if !stalled.swap(true, Ordering::SeqCst) {
            return answer("complete").delayed(Duration::from_secs(6));
        }
        answer("complete")
    }))
    .await;
    // The duplicate window on: it is what tracks a payment sent without a key.
    let window = Some("\"10min\"");
    let mut config = set_key(
        &world.base_config(),
        "idempotency",
        "duplicate_window",
        window,
    );
    if let Some(redis) = redis {
        let url = format!("\"{}\"", redis.url());
        config = set_key(&config, "limits", "redis_url", Some(&url));
    }
    let payshim = Payshim::start(&config).await;
    (world, payshim)
}

#[tokio::test]
async fn unknown_outcome_is_not_charged_twice_and_resolves_from_the_transactions() {
    unknown_outcome_resolves(None, Some(b"stalled-1")).await;
}

#[tokio::test]
async fn unknown_outcome_of_a_payment_without_a_key_resolves_the_same_way() {
    unknown_outcome_resolves(None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcome_resolves_with_the_keys_in_redis() {
    let redis = RedisServer::start();
    unknown_outcome_resolves(Some(&redis), Some(b"stalled-1")).await;
    let entries = redis_entries(&redis.url());
    assert!(
        entries
            .iter()
            .any(|(k, v)| k.starts_with("payshim:idem:key:") && v.starts_with("D|")),
        "{entries:?}"
    );
    for (key, value) in &entries {
        assert_no_card_data(key, value.as_bytes());
    }
}

/// A payment (with `key`, or without one) stalls past the timeout: a retry is held while
/// it may complete, then gets its transaction once the order's list shows it.
async fn unknown_outcome_resolves(redis: Option<&RedisServer>, key: Option<&[u8]>) {
    let list = Arc::new(AtomicU8::new(LIST_EMPTY));
    let (world, payshim) = stalling_world(list.clone(), redis).await;
    let first = pay(&payshim, PAN, key).await;
    assert_eq!(first.status, 504, "{}", first.text());
    // The stalled payment may still complete: a retry is not forwarded.
    let retry = pay(&payshim, PAN, key).await;
    assert_eq!(retry.status, 409, "{}", retry.text());
    assert!(retry.header("retry-after").is_some());
    assert_eq!(posts(&world), 1);
    // The order's transactions now show the charge: the retry gets it.
    list.store(LIST_CHARGED, Ordering::SeqCst);
    let resolved = pay(&payshim, PAN, key).await;
    assert_eq!(resolved.status, 201, "{}", resolved.text());
    assert_eq!(
        resolved.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(resolved.json()["data"]["transaction-type"], "purchase");
    let again = pay(&payshim, PAN, key).await;
    assert_eq!(again.body, resolved.body, "kept for the key");
    assert_eq!(posts(&world), 1, "charged once");
    assert_metric(&payshim, "unknown_outcome", 1).await;
    assert_metric(&payshim, "unknown_resolved", 1).await;
    payshim.stop().await;
    let events = audit_events(&world);
    let resolved_record = events
        .iter()
        .find(|e| e["event"] == "payment.resolved")
        .unwrap_or_else(|| panic!("no payment.resolved in {events:?}"));
    assert_eq!(
        resolved_record["original_request_id"].as_str(),
        first.header("x-request-id").as_deref()
    );
    assert_no_card_data("audit file", audit_text(&world).as_bytes());
}

#[tokio::test]
async fn unknown_outcome_without_a_transaction_lets_one_retry_through_after_the_timeout() {
    let (world, payshim) = stalling_world(Arc::new(AtomicU8::new(LIST_EMPTY)), None).await;
    let key = Some(&b"stalled-2"[..]);
    let sent = std::time::Instant::now();
    assert_eq!(pay(&payshim, PAN, key).await.status, 504);
    assert_eq!(pay(&payshim, PAN, key).await.status, 409);
    assert_eq!(posts(&world), 1);
    // Twice upstream.timeout after the first was sent, with no transaction: it did not
    // happen, so the retry goes through, once.
    tokio::time::sleep(Duration::from_millis(4300).saturating_sub(sent.elapsed())).await;
    let retry = pay(&payshim, PAN, key).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(posts(&world), 2);
    let again = pay(&payshim, PAN, key).await;
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(posts(&world), 2);
}

#[tokio::test]
async fn unknown_outcome_is_held_while_the_transaction_list_cannot_be_read() {
    let list = Arc::new(AtomicU8::new(LIST_FAILS));
    let (world, payshim) = stalling_world(list, None).await;
    let key = Some(&b"stalled-3"[..]);
    let sent = std::time::Instant::now();
    assert_eq!(pay(&payshim, PAN, key).await.status, 504);
    // Past the hold, but the list fails: nothing can be concluded, nothing goes through.
    tokio::time::sleep(Duration::from_millis(4300).saturating_sub(sent.elapsed())).await;
    let retry = pay(&payshim, PAN, key).await;
    assert_eq!(retry.status, 409, "{}", retry.text());
    assert_eq!(posts(&world), 1);
    assert_metric(&payshim, "unknown_lookup_failed", 1).await;
}

/// A world whose double stalls the first POST past `upstream.timeout` (2 s) and answers
/// the order's transaction list with what `list` holds.
async fn stalling_action_world(list: Arc<std::sync::Mutex<Value>>) -> (World, Payshim) {
    let stalled = Arc::new(AtomicBool::new(false));
    let world = World::new(handler(move |req| {
        if req.method == Method::GET {
            let list = list.lock().expect("list").clone();
            return Reply::json(200, json!({ "data": list }));
        }
        if !stalled.swap(true, Ordering::SeqCst) {
            return answer("complete").delayed(Duration::from_secs(6));
        }
        answer("complete")
    }))
    .await;
    let payshim = Payshim::start(&world.base_config()).await;
    (world, payshim)
}

fn action_request(payshim: &Payshim, action: &str, key: &str) -> Request<Bytes> {
    let body = match action {
        "refund" => r#"{"data":{"amount":1000}}"#,
        "cancel" => r#"{"data":{"reason":"duplicate"}}"#,
        "confirm" => r#"{"data":{}}"#,
        _ => "",
    };
    let mut req = Request::post(payshim.url(&format!(
        "/v2/orders/{ORDER}/transactions/{TRANSACTION}/{action}"
    )))
    .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
    .header("idempotency-key", key);
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    req.body(Bytes::from(body)).expect("request")
}

/// A transaction action with a key stalls past the timeout: a retry is held, then gets
/// what the order's transactions show of it (a new capture or refund transaction, or the
/// transaction itself `cancelled` or, after a confirm, `complete`), and nothing is sent twice.
#[tokio::test]
async fn unknown_outcome_of_transaction_actions_resolves_from_the_transactions() {
    for action in ["capture", "refund", "cancel", "confirm"] {
        let list = Arc::new(std::sync::Mutex::new(json!([])));
        let (world, payshim) = stalling_action_world(list.clone()).await;
        let key = format!("{action}-stalled");
        let first = send(&payshim, action_request(&payshim, action, &key)).await;
        assert_eq!(first.status, 504, "{action}: {}", first.text());
        let retry = send(&payshim, action_request(&payshim, action, &key)).await;
        assert_eq!(retry.status, 409, "{action}: {}", retry.text());
        assert_eq!(posts(&world), 1, "{action}");
        // The list shows the action's effect.
        let mut shown = transaction(ORDER, action);
        if action == "cancel" || action == "confirm" {
            shown = transaction(ORDER, "purchase");
            shown["id"] = json!(TRANSACTION);
            shown["status"] = json!(if action == "cancel" {
                "cancelled"
            } else {
                "complete"
            });
        }
        // A fixed reference: a random 12-digit one passes the Luhn check one time in ten,
        // and a kept answer masks it, as it masks any card-like digits.
        shown["reference"] = json!("ref-of-the-first-attempt");
        *list.lock().expect("list") = json!([transaction(ORDER, "authorize"), shown]);
        let resolved = send(&payshim, action_request(&payshim, action, &key)).await;
        assert_eq!(resolved.status, 200, "{action}: {}", resolved.text());
        assert_eq!(
            resolved.header("idempotent-replayed").as_deref(),
            Some("true"),
            "{action}"
        );
        assert_eq!(resolved.json()["data"], shown, "{action}");
        assert_eq!(posts(&world), 1, "{action}: sent once");
        payshim.stop().await;
        let events = audit_events(&world);
        let record = events
            .iter()
            .find(|e| e["event"] == "transaction.resolved")
            .unwrap_or_else(|| panic!("{action}: no transaction.resolved in {events:?}"));
        assert_eq!(
            record["original_request_id"].as_str(),
            first.header("x-request-id").as_deref(),
            "{action}"
        );
    }
}

/// Nothing in the order's transactions after twice the timeout: the action did not
/// happen, so one retry goes through (before, a key stayed held until `idempotency.ttl`).
#[tokio::test]
async fn unknown_outcome_of_a_refund_without_a_transaction_lets_one_retry_through() {
    let list = Arc::new(std::sync::Mutex::new(json!([transaction(
        ORDER, "purchase"
    )])));
    let (world, payshim) = stalling_action_world(list).await;
    let sent = std::time::Instant::now();
    let refund = || action_request(&payshim, "refund", "refund-none");
    assert_eq!(send(&payshim, refund()).await.status, 504);
    assert_eq!(send(&payshim, refund()).await.status, 409);
    tokio::time::sleep(Duration::from_millis(4300).saturating_sub(sent.elapsed())).await;
    let retry = send(&payshim, refund()).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(posts(&world), 2);
    let again = send(&payshim, refund()).await;
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(posts(&world), 2);
}
