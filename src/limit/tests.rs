use super::hash::fp;
use super::*;
use crate::config::Quota;
use std::time::{Duration, Instant};

fn quota(count: u32, period: Duration, burst: u32) -> Quota {
    Quota {
        count,
        period,
        burst,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn config() -> LimitsConfig {
    LimitsConfig {
        per_client: None,
        per_ip: None,
        per_order: None,
        per_card: None,
        card_attempts: None,
        decline_ratio: 0.8,
        decline_window: 20,
        decline_cooldown: Duration::from_secs(300),
        max_keys: 100_000,
        max_body: 16 * 1024,
        redis_url: None,
        redis_timeout: Duration::from_millis(250),
        on_store_error: OnStoreError::Deny,
    }
}

/// One check of `scope` for the key numbered `n` (same attempt value for cards).
async fn check(l: &Limiter, scope: Scope, n: u32) -> Result<(), LimitError> {
    match scope {
        Scope::Client => l.check_client(&format!("client-{n}")).await,
        Scope::Ip => l.check_ip(IpAddr::from([10, 0, 0, n as u8])).await,
        Scope::Order => l.check_order(uuid::Uuid::from_u128(n as u128)).await,
        Scope::Card => l.check_card(&fp(n), &fp(1000 + n)).await,
        _ => unreachable!(),
    }
}

fn assert_exceeded(r: Result<(), LimitError>, scope: Scope, max_retry: Duration) -> Duration {
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
            retry_after
        }
        other => panic!("{scope}: expected Exceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn each_kind_reaches_its_quota_alone() {
    let kinds = [Scope::Client, Scope::Ip, Scope::Order, Scope::Card];
    let mut c = config();
    c.per_client = Some(quota(3, HOUR, 3));
    c.per_ip = Some(quota(3, HOUR, 3));
    c.per_order = Some(quota(3, HOUR, 3));
    c.per_card = Some(quota(3, HOUR, 3));
    c.card_attempts = Some(quota(3, HOUR, 3));
    let l = Limiter::start(&c);
    for (i, scope) in kinds.into_iter().enumerate() {
        let key = i as u32;
        for n in 0..3 {
            check(&l, scope, key)
                .await
                .unwrap_or_else(|e| panic!("{scope} #{n}: {e:?}"));
        }
        // GCRA: the next cell comes one emission interval (period / count) later.
        let retry = assert_exceeded(check(&l, scope, key).await, scope, HOUR);
        assert!(
            retry > HOUR / 3 - Duration::from_secs(1),
            "{scope}: {retry:?}"
        );
        // Another key of the same kind is unaffected...
        check(&l, scope, key + 100).await.unwrap();
        // ...and so is the same key number of every other kind.
        for other in kinds.into_iter().filter(|k| *k != scope) {
            check(&l, other, key + 200).await.unwrap();
        }
    }
}

#[tokio::test]
async fn reconfigure_keeps_the_counters_of_unchanged_quotas() {
    let mut c = config();
    c.per_client = Some(quota(2, HOUR, 2));
    c.per_ip = Some(quota(2, HOUR, 2));
    let l = Limiter::start(&c);
    for _ in 0..2 {
        check(&l, Scope::Client, 1).await.unwrap();
        check(&l, Scope::Ip, 1).await.unwrap();
    }
    c.per_ip = Some(quota(3, HOUR, 3));
    l.reconfigure(&c);
    // per_client did not change: still exhausted.
    assert_exceeded(check(&l, Scope::Client, 1).await, Scope::Client, HOUR);
    // per_ip did: a new quota, counted afresh.
    for _ in 0..3 {
        check(&l, Scope::Ip, 1).await.unwrap();
    }
    assert_exceeded(check(&l, Scope::Ip, 1).await, Scope::Ip, HOUR);
    c.per_client = None;
    l.reconfigure(&c);
    check(&l, Scope::Client, 1).await.unwrap();
}

#[tokio::test]
async fn burst_is_honoured() {
    for (count, period, burst) in [
        (10, Duration::from_secs(60), 2),
        (1, Duration::from_secs(1), 5),
        (5, Duration::from_secs(600), 5),
    ] {
        let mut c = config();
        c.per_order = Some(quota(count, period, burst));
        let l = Limiter::start(&c);
        for n in 0..burst {
            l.check_order(uuid::Uuid::from_u128(1))
                .await
                .unwrap_or_else(|e| {
                    panic!("{count}/{period:?} burst {burst}: #{n} refused: {e:?}")
                });
        }
        let retry = assert_exceeded(
            l.check_order(uuid::Uuid::from_u128(1)).await,
            Scope::Order,
            period,
        );
        assert!(retry <= period / count, "{retry:?}");
    }
}

#[tokio::test]
async fn retry_after_is_when_the_next_request_passes() {
    let mut c = config();
    c.per_ip = Some(quota(20, Duration::from_secs(1), 1));
    let l = Limiter::start(&c);
    let ip = IpAddr::from([192, 0, 2, 1]);
    l.check_ip(ip).await.unwrap();
    let retry = assert_exceeded(l.check_ip(ip).await, Scope::Ip, Duration::from_millis(50));
    tokio::time::sleep(retry).await;
    l.check_ip(ip).await.unwrap();
}

#[tokio::test]
async fn card_attempts_cap_distinct_combinations() {
    let mut c = config();
    c.card_attempts = Some(quota(3, HOUR, 3));
    c.per_card = Some(quota(100, HOUR, 100));
    let l = Limiter::start(&c);
    let card = fp(1);
    for attempt in 0..3 {
        l.check_card(&card, &fp(100 + attempt)).await.unwrap();
    }
    assert_exceeded(
        l.check_card(&card, &fp(103)).await,
        Scope::CardAttempts,
        HOUR,
    );
    // Repeating an attempt already seen (a retry of the same details) does not count.
    for attempt in 0..3 {
        l.check_card(&card, &fp(100 + attempt)).await.unwrap();
    }
    assert_exceeded(
        l.check_card(&card, &fp(104)).await,
        Scope::CardAttempts,
        HOUR,
    );
    // Another card is unaffected.
    l.check_card(&fp(2), &fp(103)).await.unwrap();
}

#[tokio::test]
async fn card_attempts_before_per_card() {
    let mut c = config();
    c.card_attempts = Some(quota(1, HOUR, 1));
    c.per_card = Some(quota(2, HOUR, 2));
    let l = Limiter::start(&c);
    let card = fp(7);
    l.check_card(&card, &fp(1)).await.unwrap();
    assert_exceeded(l.check_card(&card, &fp(2)).await, Scope::CardAttempts, HOUR);
    l.check_card(&card, &fp(1)).await.unwrap();
    assert_exceeded(l.check_card(&card, &fp(1)).await, Scope::Card, HOUR);
}

#[tokio::test]
async fn decline_breaker_trips_and_recovers() {
    let mut c = config();
    c.per_client = Some(quota(1000, Duration::from_secs(1), 1000));
    c.decline_window = 10;
    c.decline_ratio = 0.8;
    c.decline_cooldown = Duration::from_millis(300);
    let l = Limiter::start(&c);
    // 3 approvals then 7 declines: 0.7, below the ratio.
    for i in 0..10 {
        assert!(!l.record_outcome("shop", i >= 3));
    }
    l.check_client("shop").await.unwrap();
    // The sliding window drops an approval: 8 declines in the last 10.
    assert!(l.record_outcome("shop", true));
    let retry = assert_exceeded(
        l.check_client("shop").await,
        Scope::Breaker,
        Duration::from_millis(300),
    );
    l.check_client("other-shop").await.unwrap();
    tokio::time::sleep(retry + Duration::from_millis(10)).await;
    l.check_client("shop").await.unwrap();
}

#[tokio::test]
async fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
    let mut c = config();
    c.per_ip = Some(quota(1, HOUR, 1));
    let l = Limiter::start(&c);
    l.check_ip("2001:db8::1".parse().unwrap()).await.unwrap();
    assert_exceeded(
        l.check_ip("2001:db8::ffff:1".parse().unwrap()).await,
        Scope::Ip,
        HOUR,
    );
    l.check_ip("2001:db8:0:1::1".parse().unwrap())
        .await
        .unwrap();
    l.check_ip("192.0.2.7".parse().unwrap()).await.unwrap();
    assert_exceeded(
        l.check_ip("::ffff:192.0.2.7".parse().unwrap()).await,
        Scope::Ip,
        HOUR,
    );
    assert_eq!(
        redis_key(Scope::Ip, &ip_key("2001:db8::ab".parse().unwrap())),
        "payshim:rl:per_ip:2001:db8::"
    );
    assert_eq!(
        redis_key(Scope::Card, &HexKey(&[0xab; 32])),
        format!("payshim:rl:per_card:{}", "ab".repeat(32))
    );
}

#[tokio::test]
async fn disabled_limits_always_pass() {
    let l = Limiter::start(&config());
    for i in 0..1000 {
        l.check_client("c").await.unwrap();
        l.check_ip(IpAddr::from([10, 0, 0, 1])).await.unwrap();
        l.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
        l.check_card(&fp(1), &fp(i)).await.unwrap();
    }
    assert_eq!(l.local_keys(), 0);
    assert_eq!(l.readiness_problem(), None);
}

/// The background task drops idle keys of every local kind by itself, long before
/// `max_keys` would force it.
#[tokio::test]
async fn idle_keys_are_pruned_in_the_background() {
    const N: u32 = 5_000;
    let mut c = config();
    // Each key is idle again a millisecond after its one use.
    let fast = quota(1000, Duration::from_secs(1), 1);
    c.per_ip = Some(fast);
    c.per_order = Some(fast);
    c.per_card = Some(fast);
    c.card_attempts = Some(quota(1, Duration::from_millis(1), 1));
    c.max_keys = 1_000_000;
    let l = Limiter::start(&c);
    for i in 0..N {
        l.check_ip(IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .await
            .unwrap();
        l.check_payment(
            Some(uuid::Uuid::from_u128(u128::from(i) + 1)),
            Some((&fp(i), &fp(!i))),
        )
        .await
        .unwrap();
    }
    let held = l.local_keys();
    assert!(
        held >= 4 * N as usize,
        "ip, order, card, attempts: {held} keys"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while l.local_keys() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(l.local_keys(), 0, "idle keys left after pruning");
}

#[tokio::test]
async fn shared_mode_without_redis_denies_or_falls_back() {
    // Nothing listens on port 1: start-up must neither block nor fail.
    let mut c = config();
    c.per_order = Some(quota(2, HOUR, 2));
    c.card_attempts = Some(quota(1, HOUR, 1));
    c.redis_url = Some("redis://127.0.0.1:1".into());
    let started = Instant::now();
    let deny = Limiter::start(&c);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(deny.readiness_problem().is_some());
    assert!(matches!(
        deny.check_order(uuid::Uuid::from_u128(1)).await,
        Err(LimitError::StoreUnavailable)
    ));
    assert!(matches!(
        deny.check_card(&fp(1), &fp(1)).await,
        Err(LimitError::StoreUnavailable)
    ));
    // The breaker is local and unaffected.
    deny.check_client("c").await.unwrap();

    c.on_store_error = OnStoreError::Local;
    let local = Limiter::start(&c);
    assert!(local.readiness_problem().is_some());
    local.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
    local.check_order(uuid::Uuid::from_u128(1)).await.unwrap();
    assert_exceeded(
        local.check_order(uuid::Uuid::from_u128(1)).await,
        Scope::Order,
        HOUR,
    );
    local.check_card(&fp(1), &fp(1)).await.unwrap();
    assert_exceeded(
        local.check_card(&fp(1), &fp(2)).await,
        Scope::CardAttempts,
        HOUR,
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(local.readiness_problem().is_some());
}

#[test]
fn limiter_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Limiter>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = Limiter::start(&config());
        send(&l.check_client("c"));
        send(&l.check_ip(IpAddr::from([127, 0, 0, 1])));
        send(&l.check_order(uuid::Uuid::from_u128(1)));
        send(&l.check_card(&[0; 32], &[0; 32]));
    });
}
