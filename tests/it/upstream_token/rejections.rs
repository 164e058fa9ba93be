//! An upstream 401: one refresh and one resend, shared by concurrent 401s, and a 502 when
//! the resend is refused too (or, with a static token, after the one send).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{World, assert_api_error, bearer, pay, pay_concurrently, wait_readyz};
use crate::support;
use support::payshim::{Payshim, UPSTREAM_TOKEN, base_config};
use support::{HttpVersion, Recorded};

#[tokio::test]
async fn an_upstream_401_causes_one_refresh_and_one_resend() {
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    // The store rotated its credentials: token 1 is now refused.
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.json()["data"]["type"], "transaction");
    assert_eq!(world.token_calls(), 2, "exactly one refresh");
    assert_eq!(
        world.payment_tokens(),
        vec![bearer(1), bearer(2)],
        "one send, one resend with the fresh token"
    );
    // Both sends carried the same canonical body.
    let payments: Vec<Recorded> = world
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/payments"))
        .collect();
    assert_eq!(payments[0].body, payments[1].body);
    // The next payment goes straight out with token 2.
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201);
    assert_eq!(world.payment_tokens().len(), 3);
    assert_eq!(world.token_calls(), 2);
    payshim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_share_one_refresh() {
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());
    // The 401s all come back together, so the refreshes they cause race.
    world.api.batch_rejections.store(true, Ordering::SeqCst);
    let statuses = pay_concurrently(&payshim, 50).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let used = world.payment_tokens();
    let with_1 = used.iter().filter(|t| **t == bearer(1)).count();
    let with_2 = used.iter().filter(|t| **t == bearer(2)).count();
    // The burst was concurrent: many requests were rejected at the same moment.
    assert!(with_1 >= 10, "only {with_1} concurrent 401s: {used:?}");
    assert_eq!(
        world.token_calls(),
        2,
        "{with_1} concurrent 401s must share one refresh"
    );
    // Every request ends with exactly one send of token 2, and at most one before it.
    assert_eq!(with_2, 50, "{used:?}");
    assert!(with_1 <= 50, "{used:?}");
    assert_eq!(used.len(), with_1 + with_2);
    payshim.stop().await;
}

#[tokio::test]
async fn repeated_401_is_a_502_after_exactly_one_resend() {
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    world.api.reject_all.store(true, Ordering::SeqCst);
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 502);
    assert_eq!(world.payment_tokens(), vec![bearer(1), bearer(2)]);
    assert_eq!(world.token_calls(), 2);
    payshim.stop().await;

    // With a static token there is nothing to refresh: one send, then 502.
    let world = World::new(3600).await;
    world.api.reject_all.store(true, Ordering::SeqCst);
    let payshim = Payshim::start(&base_config(
        &world.pki,
        &world.upstream.url(),
        world.audit.path(),
    ))
    .await;
    let resp = pay(&payshim, &payshim.client(HttpVersion::Http1)).await;
    assert_api_error(&resp, 502);
    assert_eq!(
        world.payment_tokens(),
        vec![format!("Bearer {UPSTREAM_TOKEN}")]
    );
    assert_eq!(world.token_calls(), 0);
    payshim.stop().await;
}
