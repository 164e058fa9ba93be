//! Fetching the managed token: one client_credentials call for many requests and one
//! refresh at 80% of `expires_in`, and payments sent at start-up waiting for the first
//! token (or getting 503 once that fetch fails).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{
    CLIENT_ID, CLIENT_SECRET, TOKEN_PATH, World, bearer, pay_concurrently, wait_readyz, wait_until,
};
use crate::support;
use support::payshim::{Payshim, admin_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_call_for_many_requests_and_one_refresh_at_80_percent() {
    let world = World::new(2).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    assert_eq!(world.token_calls(), 1);

    // The token call itself: client_credentials, form-encoded, to {upstream.url}.
    let token_call = world.upstream.requests()[0].clone();
    assert_eq!(token_call.method, http::Method::POST);
    assert_eq!(token_call.path, TOKEN_PATH);
    assert_eq!(
        token_call.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let form: HashMap<String, String> = form_urlencoded::parse(&token_call.body)
        .into_owned()
        .collect();
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(form.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some(CLIENT_SECRET)
    );
    assert!(token_call.header("authorization").is_none());
    assert_eq!(
        token_call.header("host"),
        Some(format!("localhost:{}", world.upstream.addr().port())),
        "the token call names the API host"
    );

    // 50 concurrent payments: all served with token 1, no further token call.
    let statuses = pay_concurrently(&payshim, 50).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(world.token_calls(), 1, "token calls during the first burst");
    let used = world.payment_tokens();
    assert_eq!(used.len(), 50);
    assert!(used.iter().all(|t| *t == bearer(1)), "{used:?}");

    // One refresh at 80% of the 2 s lifetime, ahead of expiry.
    wait_until("the refresh", Duration::from_secs(4), || {
        world.token_calls() >= 2
    })
    .await;
    let times = world.api.token_times.lock().unwrap().clone();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(1400) && gap < Duration::from_millis(1950),
        "refresh {gap:?} after the first token (lifetime 2 s, expected ~1.6 s)"
    );

    // Another burst: the refreshed token, still no token call per request.
    let statuses = pay_concurrently(&payshim, 50).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let calls = world.token_calls();
    assert!(
        (2..=3).contains(&calls),
        "{calls} token calls for 100 requests in about 2 s"
    );
    let second: Vec<String> = world.payment_tokens()[50..].to_vec();
    assert_eq!(second.len(), 50);
    assert!(
        second.iter().all(|t| *t == bearer(2) || *t == bearer(3)),
        "{second:?}"
    );
    // Over the whole run: one token call per ~1.6 s, no matter how many requests.
    let lifetime_calls = world.token_calls();
    let elapsed = times[0].elapsed().as_secs_f64();
    assert!(
        lifetime_calls as f64 <= elapsed / 1.6 + 1.5,
        "{lifetime_calls} token calls in {elapsed:.1} s"
    );
    payshim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_at_start_up_wait_for_the_first_token() {
    // The token endpoint takes 1.5 s: payments sent as soon as /healthz answers arrive
    // while the first fetch is in flight, and must wait for it rather than get 503.
    let world = World::new(3600).await;
    world.api.token_delay_ms.store(1500, Ordering::SeqCst);
    let payshim = Payshim::start(&world.config()).await;
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "ready before the first token: {body}");
    assert!(body.contains("no upstream token"), "{body}");

    let statuses = pay_concurrently(&payshim, 6).await;
    assert_eq!(
        statuses,
        vec![201; 6],
        "payments sent during the first fetch"
    );
    assert_eq!(
        world.token_calls(),
        1,
        "the waiting payments shared one fetch"
    );
    assert_eq!(world.payment_tokens(), vec![bearer(1); 6]);
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    payshim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_at_start_up_get_503_once_a_slow_first_fetch_fails() {
    // Waiting is bounded by the fetch: when it fails, the waiting payments get 503.
    let world = World::new(3600).await;
    world.api.token_delay_ms.store(500, Ordering::SeqCst);
    world.api.down.store(true, Ordering::SeqCst);
    let payshim = Payshim::start(&world.config()).await;
    let started = Instant::now();
    let statuses = pay_concurrently(&payshim, 6).await;
    assert_eq!(statuses, vec![503; 6]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "payments waited {:?} for a token",
        started.elapsed()
    );
    assert!(world.token_calls() >= 1, "no token call");
    assert!(world.payment_tokens().is_empty(), "a payment went out");
    let (status, _) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503);
    payshim.stop().await;
}
