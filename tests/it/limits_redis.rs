//! Shared rate limits through a real Redis (see README.md, Architecture): two `Limiter`s standing
//! for two payshim replicas enforce one quota together; Redis stopped in the middle of a
//! test fails closed (deny) or falls back to local limits (local); checks recover on their
//! own when Redis is back, also when it was down at start-up.
//!
//! Needs `redis-server` on PATH (Debian package `redis-server`, installed by
//! `scripts/test.sh`); fails, never skips, without it.

use crate::support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use payshim::config::LimitsConfig;
use payshim::limit::{LimitError, Limiter, Scope};
use support::redis::RedisServer;

/// How long recovery may take once Redis is back (the probe runs every 500 ms).
const RECOVERY: Duration = Duration::from_secs(10);

/// `[limits]` with every quota off except `set` (TOML values), shared through `redis_url`.
fn limits(redis_url: &str, set: &[(&str, &str)]) -> LimitsConfig {
    let mut keys: Vec<(String, String)> = [
        "per_client",
        "per_ip",
        "per_order",
        "per_card",
        "card_attempts",
    ]
    .iter()
    .map(|k| (k.to_string(), "\"off\"".to_string()))
    .collect();
    keys.push(("redis_url".into(), format!("{redis_url:?}")));
    keys.push(("redis_timeout".into(), "\"250ms\"".into()));
    for (k, v) in set {
        match keys.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v.to_string(),
            None => keys.push((k.to_string(), v.to_string())),
        }
    }
    let limits: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let toml = format!(
        "[upstream]\nurl = \"sandbox\"\n\n[audit]\nkey = \"{}\"\n\n[limits]\n{limits}",
        "k".repeat(40)
    );
    payshim::config::from_toml(&toml, &HashMap::new())
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"))
        .limits
}

/// Waits until the limiter reports Redis reachable.
async fn ready(l: &Limiter) {
    let deadline = Instant::now() + RECOVERY;
    while let Some(problem) = l.readiness_problem() {
        assert!(
            Instant::now() < deadline,
            "still not ready after {RECOVERY:?}: {problem}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fp(i: u8) -> [u8; 32] {
    let mut b = [0x5a; 32];
    b[0] = i;
    b[31] = i.wrapping_mul(31);
    b
}

#[track_caller]
fn assert_exceeded(r: Result<(), LimitError>, scope: Scope, max_retry: Duration) {
    match r {
        Err(LimitError::Exceeded {
            scope: s,
            retry_after,
        }) => {
            assert_eq!(s, scope);
            assert!(
                retry_after > Duration::ZERO && retry_after <= max_retry,
                "{scope}: retry_after {retry_after:?} not in (0, {max_retry:?}]"
            );
        }
        other => panic!("{scope}: expected Exceeded, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_enforce_one_order_quota() {
    let redis = RedisServer::start();
    let config = limits(&redis.url(), &[("per_order", "\"5/10min\"")]);
    let (a, b) = (Limiter::start(&config), Limiter::start(&config));
    ready(&a).await;
    ready(&b).await;
    for _ in 0..3 {
        a.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
    }
    for _ in 0..2 {
        b.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
    }
    // One emission interval (10 min / 5) until the next one.
    let interval = Duration::from_secs(120);
    assert_exceeded(
        a.check_order(uuid::Uuid::from_u128(1)).await,
        Scope::Order,
        interval,
    );
    assert_exceeded(
        b.check_order(uuid::Uuid::from_u128(1)).await,
        Scope::Order,
        interval,
    );
    // Another order is unaffected.
    b.check_order(uuid::Uuid::from_u128(2)).await.unwrap();
    assert_eq!(a.local_keys(), 0, "shared mode keeps no local quota state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_shared() {
    let redis = RedisServer::start();
    let config = limits(
        &redis.url(),
        &[
            ("per_client", "\"2/h\""),
            ("per_ip", "\"2/h\""),
            ("per_card", "\"2/h\""),
        ],
    );
    let (a, b) = (Limiter::start(&config), Limiter::start(&config));
    ready(&a).await;
    ready(&b).await;
    let hour = Duration::from_secs(3600);

    a.check_client("web-eu").await.unwrap();
    b.check_client("web-eu").await.unwrap();
    assert_exceeded(a.check_client("web-eu").await, Scope::Client, hour);
    b.check_client("web-us").await.unwrap();

    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    a.check_ip(ip).await.unwrap();
    // Same /64.
    b.check_ip("2001:db8::2".parse().unwrap()).await.unwrap();
    assert_exceeded(b.check_ip(ip).await, Scope::Ip, hour);
    a.check_ip("192.0.2.1".parse().unwrap()).await.unwrap();

    a.check_card(&fp(1), &fp(100)).await.unwrap();
    b.check_card(&fp(1), &fp(100)).await.unwrap();
    assert_exceeded(a.check_card(&fp(1), &fp(100)).await, Scope::Card, hour);
    b.check_card(&fp(2), &fp(100)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_attempts_are_shared() {
    let redis = RedisServer::start();
    let config = limits(&redis.url(), &[("card_attempts", "\"3/h\"")]);
    let (a, b) = (Limiter::start(&config), Limiter::start(&config));
    ready(&a).await;
    ready(&b).await;
    let card = fp(7);
    a.check_card(&card, &fp(1)).await.unwrap();
    b.check_card(&card, &fp(2)).await.unwrap();
    a.check_card(&card, &fp(3)).await.unwrap();
    // A fourth (expiry, CVV) combination, from either replica, is refused...
    assert_exceeded(
        b.check_card(&card, &fp(4)).await,
        Scope::CardAttempts,
        Duration::from_secs(3600),
    );
    assert_exceeded(
        a.check_card(&card, &fp(4)).await,
        Scope::CardAttempts,
        Duration::from_secs(3600),
    );
    // ...repeating a combination already seen is not a new attempt...
    b.check_card(&card, &fp(1)).await.unwrap();
    a.check_card(&card, &fp(3)).await.unwrap();
    // ...and another card has its own budget.
    b.check_card(&fp(8), &fp(4)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_prefixed_hex_and_expire() {
    let redis = RedisServer::start();
    let config = limits(
        &redis.url(),
        &[
            ("per_order", "\"5/10min\""),
            ("per_card", "\"5/h\""),
            ("card_attempts", "\"3/h\""),
        ],
    );
    let l = Limiter::start(&config);
    ready(&l).await;
    // Orders by their canonical (lower-case) UUID, whatever case the path used.
    let order = uuid::Uuid::parse_str("0A1B2C3D-0000-4000-8000-00000000ABCD").unwrap();
    l.check_order(order).await.unwrap();
    l.check_card(&[0xab; 32], &[0xcd; 32]).await.unwrap();

    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("payshim:rl:*")
        .query(&mut con)
        .unwrap();
    keys.sort();
    let hex = "ab".repeat(32);
    assert_eq!(
        keys,
        [
            format!("payshim:rl:card_attempts:{hex}"),
            format!("payshim:rl:per_card:{hex}"),
            "payshim:rl:per_order:0a1b2c3d-0000-4000-8000-00000000abcd".to_string(),
        ]
    );
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{key}: PTTL {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_fails_closed_and_recovers() {
    let mut redis = RedisServer::start();
    let config = limits(&redis.url(), &[("per_order", "\"100/s\"")]);
    let l = Limiter::start(&config);
    ready(&l).await;
    l.check_order(uuid::Uuid::from_u128(1)).await.unwrap();

    redis.stop();
    assert!(matches!(
        l.check_order(uuid::Uuid::from_u128(1)).await,
        Err(LimitError::StoreUnavailable)
    ));
    assert!(l.readiness_problem().is_some());
    // Once the outage is known, requests do not wait for Redis each time.
    let started = Instant::now();
    for _ in 0..20 {
        assert!(matches!(
            l.check_order(uuid::Uuid::from_u128(1)).await,
            Err(LimitError::StoreUnavailable)
        ));
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // The breaker is local and unaffected.
    l.check_client("web-eu").await.unwrap();

    redis.start_again();
    let deadline = Instant::now() + RECOVERY;
    while l.check_order(uuid::Uuid::from_u128(1)).await.is_err() {
        assert!(Instant::now() < deadline, "no recovery within {RECOVERY:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(l.readiness_problem(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_falls_back_to_local_limits() {
    let mut redis = RedisServer::start();
    let config = limits(
        &redis.url(),
        &[
            ("per_order", "\"2/h\""),
            ("card_attempts", "\"1/h\""),
            ("on_store_error", "\"local\""),
        ],
    );
    let l = Limiter::start(&config);
    ready(&l).await;
    l.check_order(uuid::Uuid::from_u128(1)).await.unwrap();

    redis.stop();
    // Local state starts empty at the outage, and is enforced.
    l.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
    l.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
    assert_exceeded(
        l.check_order(uuid::Uuid::from_u128(1)).await,
        Scope::Order,
        Duration::from_secs(3600),
    );
    l.check_card(&fp(1), &fp(1)).await.unwrap();
    assert_exceeded(
        l.check_card(&fp(1), &fp(2)).await,
        Scope::CardAttempts,
        Duration::from_secs(3600),
    );
    assert!(l.readiness_problem().is_some());
    assert!(l.local_keys() > 0);

    redis.start_again();
    ready(&l).await;
    // Back on Redis (restarted empty): its state, not the local one, decides.
    l.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
    l.check_card(&fp(1), &fp(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up_is_retried() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let config = limits(&url, &[("per_order", "\"5/10min\"")]);
    let started = Instant::now();
    let l = Limiter::start(&config);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(l.readiness_problem().is_some());
    assert!(matches!(
        l.check_order(uuid::Uuid::from_u128(1)).await,
        Err(LimitError::StoreUnavailable)
    ));
    // Several failed connection attempts before Redis comes up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.start_again();
    ready(&l).await;
    l.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
}

/// A payment's order, card-attempts and card checks run as one script: each refusal names
/// its own scope, a refusal stops the checks after it (a refused attempt does not use the
/// card's quota), and the ones before it still count, as in local mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_checks_run_in_order_in_one_script() {
    let redis = RedisServer::start();
    let config = limits(
        &redis.url(),
        &[
            ("per_order", "\"3/h\""),
            ("card_attempts", "\"1/h\""),
            ("per_card", "\"2/h\""),
        ],
    );
    let l = Limiter::start(&config);
    ready(&l).await;
    let hour = Duration::from_secs(3600);
    let order = |n| Some(uuid::Uuid::from_u128(n));
    let (card, other_card) = (fp(1), fp(2));

    l.check_payment(order(1), Some((&card, &fp(10))))
        .await
        .unwrap();
    // A second (expiry, CVV) on the same card: refused by card_attempts, before per_card.
    assert_exceeded(
        l.check_payment(order(2), Some((&card, &fp(11)))).await,
        Scope::CardAttempts,
        hour,
    );
    // The same attempt again is allowed and uses the card's second (last) slot: the refusal
    // above did not use one.
    l.check_payment(order(3), Some((&card, &fp(10))))
        .await
        .unwrap();
    assert_exceeded(
        l.check_payment(order(4), Some((&card, &fp(10)))).await,
        Scope::Card,
        hour,
    );
    // The order quota counted every call that reached it: order 1 has used 1 of 3.
    l.check_payment(order(1), Some((&other_card, &fp(20))))
        .await
        .unwrap();
    l.check_payment(order(1), None).await.unwrap();
    assert_exceeded(
        l.check_payment(order(1), Some((&fp(3), &fp(30)))).await,
        Scope::Order,
        hour,
    );
    // The order refusal stopped the card checks: card 3 was never recorded.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let card3 = format!("payshim:rl:per_card:{}", hex::encode(fp(3)));
    let exists: bool = redis::cmd("EXISTS").arg(&card3).query(&mut con).unwrap();
    assert!(!exists, "{card3} was written after the order refusal");
}
