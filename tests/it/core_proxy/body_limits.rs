//! The request body limit (`limits.max_body`): an oversized body, announced by
//! `Content-Length` or streamed without one, is 413 in the API error format and never
//! forwarded; bodies under the limit still go through.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};

use super::{WorldExt, assert_api_error, bearer, send};
use support::client::StreamedBody;
use support::load::{ALPN_H1, ALPN_H2, complete, tls_connect};
use support::payshim::{ORDER, Payshim, payment_body, payment_request};
use support::{HttpVersion, TestResponse, World, moltin_like};

#[tokio::test]
async fn body_over_max_body_is_413_and_never_forwarded() {
    let world = World::new(moltin_like()).await;
    // Through an environment override, as an operator would.
    let env = HashMap::from([("PAYSHIM__LIMITS__MAX_BODY".to_string(), "1KiB".to_string())]);
    let payshim = Payshim::start_with_env(&world.config(), &env).await;
    let big = serde_json::json!({
        "data": {
            "gateway": "card_connect",
            "method": "purchase",
            "first_name": "A".repeat(2048),
            "last_name": "Lovelace",
            "number": "4111111111111111",
            "month": "12",
            "year": "2031",
            "verification_value": "123"
        }
    })
    .to_string();
    assert!(big.len() > 2048);
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = send(
            &payshim.client(version),
            payment_request(&payshim, &[("authorization", &bearer())], &big),
        )
        .await
        .unwrap();
        assert_api_error(&resp, 413);
    }
    assert_eq!(world.upstream.count(), 0);
    // Under the limit still goes through.
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

/// A configured passthrough route that takes a request body.
const CART_ITEMS: &str = "/v2/carts/cart-7/items";

/// POSTs `body` to `path` over a fresh connection of `version`, streamed: no
/// `Content-Length`, so HTTP/1.1 sends it chunked and HTTP/2 as DATA frames without a
/// `content-length` header. The storefront key and `Content-Type: application/json` go
/// with it.
async fn post_streamed(
    payshim: &Payshim,
    version: HttpVersion,
    path: &str,
    body: StreamedBody,
) -> Result<TestResponse, String> {
    use hyper::body::Body as _;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    assert!(
        body.size_hint().exact().is_none(),
        "a streamed body must not announce its length"
    );
    let port = payshim.addr.port();
    let (alpn, builder) = match version {
        HttpVersion::Http1 => (
            ALPN_H1,
            Request::post(path).header("host", format!("localhost:{port}")),
        ),
        HttpVersion::Http2 => (
            ALPN_H2,
            Request::post(payshim.url(path)).version(Version::HTTP_2),
        ),
    };
    let req = builder
        .header("authorization", bearer())
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let tls = tls_connect(
        payshim.addr,
        &payshim.ca_pem,
        alpn,
        None,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("TLS: {e}"))?;
    match version {
        HttpVersion::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            complete(sender.send_request(req)).await
        }
        HttpVersion::Http2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            complete(sender.send_request(req)).await
        }
    }
}

/// The `Content-Length` branch of the body limit is covered above; this is the other one: a
/// body whose size is not announced (HTTP/1.1 chunked, HTTP/2 DATA frames) and turns out to
/// be over `limits.max_body` (16 KiB) while it is read. 413 in the API format, nothing
/// forwarded, on the payment route and on a configured passthrough route. The same streamed
/// bodies under the limit still go through, so the 413 is about the size, not the framing.
#[tokio::test]
async fn streamed_body_over_max_body_is_413_and_never_forwarded() {
    const MAX_BODY: usize = 16 * 1024;
    let world = World::new(moltin_like()).await;
    let mut config = world.config();
    assert!(config.contains("max_body = \"16KiB\""), "{config}");
    config.push_str("\n[[routes]]\nmethod = \"POST\"\npath = \"/v2/carts/{id}/items\"\n");
    let payshim = Payshim::start(&config).await;
    let payments = format!("/v2/orders/{ORDER}/payments");

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        for path in [payments.as_str(), CART_ITEMS] {
            let what = format!("{version:?} POST {path}");
            // max_body + 8 KiB, in 4 KiB pieces.
            let body = StreamedBody::new(b'a', MAX_BODY + 8 * 1024, 4096);
            let resp = post_streamed(&payshim, version, path, body)
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer to an oversized streamed body: {e}"));
            assert_eq!(resp.status, 413, "{what}: {}", resp.text());
            assert_api_error(&resp, 413);
        }
    }
    assert_eq!(
        world.upstream.count(),
        0,
        "an oversized streamed body was forwarded: {:?}",
        world
            .upstream
            .requests()
            .iter()
            .map(|r| (r.path.clone(), r.body.len()))
            .collect::<Vec<_>>()
    );

    // Under the limit, streamed the same way, both routes still work.
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let payment = payment_body();
        let pieces = payment
            .as_bytes()
            .chunks(40)
            .map(Bytes::copy_from_slice)
            .collect::<Vec<_>>();
        let resp = post_streamed(&payshim, version, &payments, StreamedBody::pieces(pieces))
            .await
            .unwrap_or_else(|e| panic!("{version:?}: streamed payment: {e}"));
        assert_eq!(resp.status, 201, "{version:?}: {}", resp.text());
        let recorded = world.upstream.requests().pop().unwrap();
        assert_eq!(recorded.json()["data"]["number"], "4111111111111111");

        // Just under the limit on the passthrough route: forwarded byte for byte.
        let body = StreamedBody::new(b'b', MAX_BODY, 4096);
        let resp = post_streamed(&payshim, version, CART_ITEMS, body)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: streamed passthrough: {e}"));
        assert_eq!(resp.status, 200, "{version:?}: {}", resp.text());
        let recorded = world.upstream.requests().pop().unwrap();
        assert_eq!(recorded.path, CART_ITEMS);
        assert_eq!(recorded.body, Bytes::from(vec![b'b'; MAX_BODY]));
    }
    assert_eq!(world.upstream.count(), 4);
    payshim.stop().await;
}
