//! Limits shared through a real Redis: two payshim processes share one quota, and Redis
//! outages in `deny` mode (fail closed, `/readyz` 503, recovery) and in `local` mode (local
//! limits apply, still ready, back on Redis once reconnected).

use crate::support;

use std::time::{Duration, Instant};

use support::cards::{Binary, VISA};
use support::load::{payment_to, wait_rejected};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, admin_get, toml_str};
use support::redis::RedisServer;
use support::upstream::random_uuid;
use support::{HttpVersion, TestClient, TestPki, Upstream, World, moltin_like};

use super::{
    HOUR, RECOVERY, WorldExt, assert_emission_interval, assert_rate_limited,
    assert_rejection_record, assert_served, config_for, pay, payment, send, wait_readyz,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_quota_through_redis() {
    let redis = RedisServer::start();
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let redis_url = toml_str(&redis.url());
    let limits = [
        ("per_order", "\"4/10min\""),
        ("redis_url", redis_url.as_str()),
    ];
    let audit_a = dir.path().join("audit-a");
    let audit_b = dir.path().join("audit-b");
    let a = Binary::start(
        dir.path(),
        "a",
        &config_for(&pki, &upstream.url(), &audit_a, &limits),
    )
    .await;
    let b = Binary::start(
        dir.path(),
        "b",
        &config_for(&pki, &upstream.url(), &audit_b, &limits),
    )
    .await;
    wait_readyz(a.admin, 200).await;
    wait_readyz(b.admin, 200).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let (base_a, base_b) = (a.url(""), b.url(""));

    for (n, base) in [&base_a, &base_b, &base_a, &base_b].into_iter().enumerate() {
        let status = pay(
            &client,
            base,
            ORDER,
            STOREFRONT_KEY,
            &payment(VISA, n as u64).1,
        )
        .await;
        assert_eq!(status, 201, "payment {n}\n{}\n{}", a.output(), b.output());
    }
    let ten_min = Duration::from_secs(600);
    for (name, base) in [("A", &base_a), ("B", &base_b)] {
        let resp = send(
            &client,
            payment_to(base, ORDER, STOREFRONT_KEY, &payment(VISA, 9).1),
        )
        .await;
        let retry = assert_rate_limited(&resp, "per_order", ten_min);
        assert_emission_interval(retry, ten_min, 4);
        eprintln!("fifth payment through {name}: 429, Retry-After {retry} s");
    }
    assert_eq!(upstream.count(), 4, "exactly the quota was forwarded");
    // Another order is unaffected, through either.
    for base in [&base_a, &base_b] {
        let status = pay(
            &client,
            base,
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(VISA, 20).1,
        )
        .await;
        assert_eq!(status, 201);
    }
    assert_eq!(upstream.count(), 6);
    for audit in [&audit_a, &audit_b] {
        let rejected = wait_rejected(&audit.join("payshim.jsonl"), "per_order", 1).await;
        assert_rejection_record(&rejected[0], "web-eu", ORDER);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_then_recovers() {
    let mut redis = RedisServer::start();
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[
        ("per_order", "\"1000/s\""),
        ("redis_url", &toml_str(&redis.url())),
    ]))
    .await;
    wait_readyz(payshim.admin, 200).await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");
    let body = payment(VISA, 1).1;
    let resp = send(&client, payment_to(&base, ORDER, STOREFRONT_KEY, &body)).await;
    assert_served(&resp, "with Redis up");

    redis.stop();
    for _ in 0..3 {
        let resp = send(&client, payment_to(&base, ORDER, STOREFRONT_KEY, &body)).await;
        assert_eq!(resp.status, 503, "Redis down, deny mode: {}", resp.text());
        let json = resp.json();
        assert_eq!(json["errors"][0]["status"], 503, "{json}");
        assert!(
            json["errors"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("rate limit store")),
            "{json}"
        );
        assert!(resp.header("retry-after").is_none());
    }
    assert_eq!(
        world.upstream.count(),
        1,
        "nothing forwarded while Redis is down"
    );
    let (status, readyz) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{readyz}");
    assert!(readyz.contains("Redis"), "{readyz}");
    wait_rejected(&world.audit_path(), "not_ready", 3).await;

    redis.start_again();
    let back = Instant::now();
    loop {
        let resp = send(&client, payment_to(&base, ORDER, STOREFRONT_KEY, &body)).await;
        if resp.status == 201 {
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(
            back.elapsed() < RECOVERY,
            "payments still refused {RECOVERY:?} after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = back.elapsed();
    wait_readyz(payshim.admin, 200).await;
    eprintln!("payments served again {recovered:?} after Redis came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_in_local_mode_applies_local_limits() {
    let mut redis = RedisServer::start();
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[
        ("per_order", "\"2/h\""),
        ("redis_url", &toml_str(&redis.url())),
        ("on_store_error", "\"local\""),
    ]))
    .await;
    wait_readyz(payshim.admin, 200).await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");
    let order = random_uuid();

    redis.stop();
    // Served from local limits, which still apply.
    for n in 0..2 {
        let resp = send(
            &client,
            payment_to(&base, &order, STOREFRONT_KEY, &payment(VISA, n).1),
        )
        .await;
        assert_served(&resp, &format!("payment {n} with Redis down, local mode"));
    }
    let resp = send(
        &client,
        payment_to(&base, &order, STOREFRONT_KEY, &payment(VISA, 2).1),
    )
    .await;
    let retry = assert_rate_limited(&resp, "per_order", HOUR);
    assert_emission_interval(retry, HOUR, 2);
    assert_eq!(world.upstream.count(), 2);
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), STOREFRONT_KEY, &payment(VISA, 3).1),
    )
    .await;
    assert_served(&resp, "another order, local mode");
    // Payments are served, so the replica stays in the load balancer's rotation.
    let (status, readyz) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(
        status, 200,
        "/readyz in local mode with Redis down: {readyz}"
    );

    // Back on Redis (restarted empty): its state decides again, once reconnected.
    redis.start_again();
    let started = std::time::Instant::now();
    let mut card = 4;
    loop {
        let resp = send(
            &client,
            payment_to(&base, &order, STOREFRONT_KEY, &payment(VISA, card).1),
        )
        .await;
        if resp.status == 201 {
            break;
        }
        assert!(
            started.elapsed() < RECOVERY,
            "still refused {RECOVERY:?} after Redis came back: {}",
            resp.status
        );
        card += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_rejected(&world.audit_path(), "per_order", 1).await;
}
