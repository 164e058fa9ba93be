//! The token endpoint down (at start, when the token expires, during a refresh after a
//! 401) or unreachable: 503 and a failing `/readyz`, then recovery when it is back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{World, assert_api_error, bearer, managed_config, pay, wait_readyz, wait_until};
use crate::support;
use support::payshim::{Payshim, admin_get, base_config};
use support::{HttpVersion, TestPki, closed_port};

#[tokio::test]
async fn token_endpoint_down_at_start_gives_503_then_recovers() {
    let world = World::new(3600).await;
    world.api.down.store(true, Ordering::SeqCst);
    let payshim = Payshim::start(&world.config()).await;
    wait_until("a first token call", Duration::from_secs(5), || {
        world.token_calls() >= 1
    })
    .await;
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no upstream token"), "{body}");
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 503);
    assert!(
        world.payment_tokens().is_empty(),
        "a payment went out without a token"
    );

    // The endpoint comes back: payshim retries on its own (backoff from 0.5 s).
    world.api.down.store(false, Ordering::SeqCst);
    wait_readyz(&payshim, 200, Duration::from_secs(10)).await;
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.payment_tokens(), vec![bearer(1)]);
    payshim.stop().await;
}

#[tokio::test]
async fn token_endpoint_down_when_the_token_expires_gives_503_then_recovers() {
    let world = World::new(2).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    let client = payshim.client(HttpVersion::Http1);
    assert_eq!(pay(&payshim, &client).await.status, 201);

    world.api.down.store(true, Ordering::SeqCst);
    // The refresh at 1.6 s fails; at 2 s the token expires and readiness goes.
    wait_readyz(&payshim, 503, Duration::from_secs(5)).await;
    assert!(world.token_calls() >= 2, "no refresh attempt");
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 503);
    assert_eq!(
        world.payment_tokens().len(),
        1,
        "sent with an expired token"
    );

    world.api.down.store(false, Ordering::SeqCst);
    wait_readyz(&payshim, 200, Duration::from_secs(10)).await;
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.payment_tokens().last(), Some(&bearer(2)));
    payshim.stop().await;
}

#[tokio::test]
async fn token_endpoint_down_during_a_401_refresh_recovers() {
    // A long-lived token (1 h) is refused upstream while the token endpoint is down: the
    // refresh fails, so this payment is a 502 and payshim has no usable token. When the
    // endpoint comes back, payshim must get a token again promptly, not when the old one
    // would have been due for refresh (48 min later).
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());
    world.api.down.store(true, Ordering::SeqCst);
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 502);
    assert_eq!(
        world.payment_tokens(),
        vec![bearer(1)],
        "no resend without a token"
    );
    assert!(world.token_calls() >= 2, "no refresh attempt after the 401");

    world.api.down.store(false, Ordering::SeqCst);
    wait_readyz(&payshim, 200, Duration::from_secs(10)).await;
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.payment_tokens().last(), Some(&bearer(2)));
    payshim.stop().await;
}

#[tokio::test]
async fn token_endpoint_unreachable_gives_503_and_failing_readyz() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let down = format!("https://localhost:{}", closed.port());
    let payshim = Payshim::start(&managed_config(base_config(&pki, &down, audit.path()))).await;
    // Several attempts fail (0 s, 0.5 s, ...); readiness never comes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let resp = pay(&payshim, &payshim.client(HttpVersion::Http2)).await;
    assert_api_error(&resp, 503);
    payshim.stop().await;
}
