//! Unknown outcomes: a payment or transaction action that timed out upstream may still
//! have happened, so a retry is held, then resolved from the order's transactions (a
//! replay of what they show, or one retry through when they show nothing), never sent twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};

use super::{
    PAN, TRANSACTION, answer, assert_metric, assert_no_card_data, audit_events, audit_text, pay,
    redis_entries, send,
};
use crate::support;
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, set_key};
use support::redis::RedisServer;
use support::upstream::transaction;
use support::{Reply, World, handler};

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
