//! The keys in Redis: two processes sharing it replay each other's keys (no card data in
//! Redis, answers, logs or audit files), a payment claims its key and its order together,
//! and with Redis down and `on_store_error = "deny"` nothing is forwarded.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::{PAN, answer, assert_no_card_data, audit_text, pay, redis_entries};
use crate::support;
use support::cards::Binary;
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, payment_body, set_key, toml_path};
use support::redis::RedisServer;
use support::{HttpVersion, TestClient, World, handler};

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
