//! A failing upstream: down (502), too slow (504), resetting its answer midway or closing
//! without one. payshim answers in the API error format or lets the storefront see the
//! break, never retries the request, and keeps serving.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use super::{WorldExt, assert_api_error, bearer, send};
use support::payshim::{ORDER, Payshim, base_config, payment_body, payment_request, set_key};
use support::{
    HttpVersion, Reply, TestPki, TestResponse, World, closed_port, handler, moltin_like,
};

#[tokio::test]
async fn upstream_down_is_502_json() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let down = format!("https://localhost:{}", closed.port());
    let payshim = Payshim::start(&base_config(&pki, &down, audit.path())).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = send(
            &payshim.client(version),
            payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
        )
        .await
        .unwrap();
        assert_api_error(&resp, 502);
    }
    payshim.stop().await;
}

#[tokio::test]
async fn slow_upstream_is_504_json_and_not_retried() {
    let world = World::new(handler(|_| {
        Reply::json(201, serde_json::json!({"data": {"late": true}}))
            .delayed(Duration::from_millis(1500))
    }))
    .await;
    let config = set_key(&world.config(), "upstream", "timeout", Some("\"400ms\""));
    let payshim = Payshim::start(&config).await;
    let started = Instant::now();
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_api_error(&resp, 504);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1400),
        "504 after {took:?}: not the 400 ms upstream.timeout"
    );
    // A retry would arrive right after the timeout; give it the time to show up.
    assert!(
        !world
            .upstream
            .wait_for_requests(2, Duration::from_millis(800))
            .await,
        "the payment was sent upstream again: {:?}",
        world.upstream.requests()
    );
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

/// Which route an upstream reset is tried on: the payment (its answer is buffered for the
/// audit) or a transaction read (its answer is streamed back as it arrives).
#[derive(Clone, Copy, Debug)]
enum ResetRoute {
    Payment,
    TransactionRead,
}

impl ResetRoute {
    fn request(self, payshim: &Payshim) -> Request<Bytes> {
        match self {
            ResetRoute::Payment => {
                payment_request(payshim, &[("authorization", &bearer())], &payment_body())
            }
            ResetRoute::TransactionRead => {
                Request::get(payshim.url(&format!("/v2/orders/{ORDER}/transactions")))
                    .header("authorization", bearer())
                    .body(Bytes::new())
                    .unwrap()
            }
        }
    }
}

/// The upstream answered 200 with `Content-Length: 1000`, sent part of the body and reset
/// the connection. The storefront must see that the answer broke: a transport or protocol
/// error (HTTP/1.1: the connection ends before the declared `Content-Length`, which hyper
/// reports as a failed body read; HTTP/2: a reset stream), or a response that is not a
/// success (payshim's own 502). Never a clean 2xx: a storefront would take a truncated
/// transaction for a complete one.
#[track_caller]
fn assert_reset_answer_not_delivered_as_success(
    outcome: &Result<TestResponse, String>,
    what: &str,
) {
    match outcome {
        Err(e) => assert!(!e.is_empty(), "{what}: an error without a description"),
        Ok(resp) => assert!(
            !(200..300).contains(&resp.status),
            "{what}: SILENT TRUNCATION: the upstream reset its answer after {} of the {} bytes \
             it declared, yet the storefront got a clean {} with a {}-byte body \
             (content-length {:?}): {}",
            support::upstream::RESET_PARTIAL_BODY.len(),
            support::upstream::RESET_ANNOUNCED_LENGTH,
            resp.status,
            resp.body.len(),
            resp.header("content-length"),
            resp.text()
        ),
    }
}

async fn upstream_reset_mid_response(version: HttpVersion, route: ResetRoute) {
    let what = format!("{route:?} over {version:?}");
    let world = World::new(handler(|_| Reply::ResetAfterHeaders)).await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(version);

    let outcome = send(&client, route.request(&payshim)).await;
    assert_reset_answer_not_delivered_as_success(&outcome, &what);
    match &outcome {
        Ok(resp) => eprintln!("{what}: reset answer came back as {}", resp.status),
        Err(e) => eprintln!("{what}: reset answer came back as an error: {e}"),
    }
    assert!(
        !world
            .upstream
            .wait_for_requests(2, Duration::from_millis(500))
            .await,
        "{what}: the request was sent upstream again after a reset"
    );
    assert_eq!(world.upstream.count(), 1, "{what}");

    // payshim keeps serving: the next request, same client, same payshim, succeeds.
    world.upstream.set_handler(moltin_like());
    let resp = send(&client, route.request(&payshim))
        .await
        .unwrap_or_else(|e| panic!("{what}: the request after a reset: {e}"));
    match route {
        ResetRoute::Payment => {
            assert_eq!(resp.status, 201, "{what}: {}", resp.text());
            assert_eq!(resp.json()["data"]["type"], "transaction", "{what}");
        }
        ResetRoute::TransactionRead => {
            assert_eq!(resp.status, 200, "{what}: {}", resp.text());
            assert_eq!(resp.json()["data"][0]["type"], "transaction", "{what}");
        }
    }
    assert_eq!(world.upstream.count(), 2, "{what}");
    payshim.stop().await;
}

cases! {
    upstream_reset_mid_response_http1:
        upstream_reset_mid_response(HttpVersion::Http1, ResetRoute::Payment);
    upstream_reset_mid_response_http2:
        upstream_reset_mid_response(HttpVersion::Http2, ResetRoute::Payment);
    upstream_reset_mid_streamed_response_http1:
        upstream_reset_mid_response(HttpVersion::Http1, ResetRoute::TransactionRead);
    upstream_reset_mid_streamed_response_http2:
        upstream_reset_mid_response(HttpVersion::Http2, ResetRoute::TransactionRead);
}

#[tokio::test]
async fn upstream_closing_without_answer_is_502_and_not_retried() {
    let world = World::new(handler(|_| Reply::CloseImmediately)).await;
    let payshim = Payshim::start(&world.config()).await;
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 502);
    assert!(
        !world
            .upstream
            .wait_for_requests(2, Duration::from_millis(500))
            .await,
        "the payment was sent upstream again after the connection closed"
    );
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}
