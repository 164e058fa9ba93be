//! What payshim forwards and how: the payment and transaction reads reach the upstream with
//! the store's token instead of the storefront key, the upstream's answer comes back
//! unchanged, the Host header is the upstream's, hop-by-hop headers and cookies stay behind,
//! and every answer carries a unique request id.

use crate::support;

use bytes::Bytes;
use http::{Method, Request, Version};
use serde_json::Value;

use super::{TRANSACTION, WorldExt, assert_no_storefront_key, assert_request_id, bearer, send};
use support::payshim::{
    ORDER, Payshim, STOREFRONT_KEY, UPSTREAM_TOKEN, base_config, payment_body, payment_request,
};
use support::{HttpVersion, Reply, TestPki, Upstream, World, handler, moltin_like};

/// What the double answers to the payment in `seed_payment`: deliberately not in serde_json's
/// canonical form (spaces, key order), so only an unchanged body compares equal.
const UPSTREAM_ANSWER: &str = r#"{ "data": { "type": "transaction", "id": "5e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b", "gateway": "card_connect", "transaction-type": "purchase", "status": "complete", "amount": 4999, "currency": "USD" } }"#;

async fn seed_payment(version: HttpVersion) {
    let world = World::new(handler(|_| Reply::Respond {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-upstream-trace".into(), "trace-81".into()),
        ],
        body: UPSTREAM_ANSWER.as_bytes().to_vec(),
    }))
    .await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(version);
    let body = payment_body();

    let resp = send(
        &client,
        payment_request(&payshim, &[("authorization", &bearer())], &body),
    )
    .await
    .expect("payment through payshim");

    let expected_version = match version {
        HttpVersion::Http1 => Version::HTTP_11,
        HttpVersion::Http2 => Version::HTTP_2,
    };
    assert_eq!(resp.version, expected_version);
    // The upstream's answer comes back unchanged: status, body bytes, its own headers.
    assert_eq!(resp.status, 201, "body: {}", resp.text());
    assert_eq!(resp.body, Bytes::from_static(UPSTREAM_ANSWER.as_bytes()));
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(resp.header("x-upstream-trace").as_deref(), Some("trace-81"));
    assert_request_id(&resp);

    // Exactly one request upstream, with the store's token instead of the storefront key.
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 1);
    let req = &recorded[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, format!("/v2/orders/{ORDER}/payments"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
    assert_no_storefront_key(req);
    // payshim's own address never leaks upstream as the Host.
    if let Some(host) = req.header("host") {
        assert_eq!(host, format!("localhost:{}", world.upstream.addr().port()));
    }
    // The body may be re-serialized canonically: compare the parsed fields.
    let sent: Value = serde_json::from_str(&body).unwrap();
    let got = req.json();
    for field in [
        "gateway",
        "method",
        "first_name",
        "last_name",
        "number",
        "month",
        "year",
        "verification_value",
    ] {
        assert_eq!(got["data"][field], sent["data"][field], "data.{field}");
    }
    payshim.stop().await;
}

cases! {
    seed_payment_over_http1_reaches_upstream_with_the_store_token: seed_payment(HttpVersion::Http1);
    seed_payment_over_http2_reaches_upstream_with_the_store_token: seed_payment(HttpVersion::Http2);
}

#[tokio::test]
async fn host_header_is_the_upstreams() {
    // A plain loopback upstream (allowed for tests) is spoken to over HTTP/1.1, where the
    // Host header is explicit.
    let pki = TestPki::new();
    let upstream = Upstream::start_plain(moltin_like()).await;
    let audit = tempfile::tempdir().unwrap();
    let payshim = Payshim::start(&base_config(&pki, &upstream.url(), audit.path())).await;
    let client = payshim.client(HttpVersion::Http1);
    let resp = send(
        &client,
        Request::get(payshim.url(&format!("/v2/orders/{ORDER}/transactions")))
            .header("authorization", bearer())
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = &upstream.requests()[0];
    assert_eq!(
        req.header("host"),
        Some(format!("127.0.0.1:{}", upstream.addr().port()))
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    payshim.stop().await;
}

#[tokio::test]
async fn old_sdk_bearer_colon_form_is_accepted() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(HttpVersion::Http1);
    let old_form = format!("Bearer: {STOREFRONT_KEY}");
    let resp = send(
        &client,
        payment_request(&payshim, &[("authorization", &old_form)], &payment_body()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_request_id(&resp);
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_no_storefront_key(&recorded[0]);
    payshim.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_and_cookies_are_not_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    // HTTP/1.1: the only version where a client can send connection-specific headers.
    let client = payshim.client(HttpVersion::Http1);
    let resp = send(
        &client,
        payment_request(
            &payshim,
            &[
                ("authorization", &bearer()),
                ("connection", "x-foo"),
                ("x-foo", "hop-value"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
                ("cookie", "session=shopper-session-1"),
                ("x-moltin-sdk-language", "JS"),
            ],
            &payment_body(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let req = &world.upstream.requests()[0];
    for name in [
        "connection",
        "x-foo",
        "keep-alive",
        "proxy-authorization",
        "cookie",
    ] {
        assert!(
            req.headers.get(name).is_none(),
            "{name} was forwarded: {:?}",
            req.headers
        );
    }
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains("hop-value") && !value.contains("shopper-session-1"),
            "{name}: {value}"
        );
    }
    // Ordinary end-to-end headers do go through.
    assert_eq!(req.header("x-moltin-sdk-language").as_deref(), Some("JS"));
    payshim.stop().await;
}

#[tokio::test]
async fn transactions_read_is_forwarded_as_is() {
    const LIST: &str = r#"{"data":[ {"id":"3f2a1b0c-4d5e-4f60-8a7b-9c0d1e2f3a4b","type":"transaction"} ],"meta":{}}"#;
    let world = World::new(handler(|_| Reply::Respond {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: LIST.as_bytes().to_vec(),
    }))
    .await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(HttpVersion::Http2);
    for path in [
        format!("/v2/orders/{ORDER}/transactions?page=2"),
        format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}"),
    ] {
        let resp = send(
            &client,
            Request::get(payshim.url(&path))
                .header("authorization", bearer())
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.body, Bytes::from_static(LIST.as_bytes()), "{path}");
        assert_request_id(&resp);
        let req = world.upstream.requests().pop().unwrap();
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.path, path);
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {UPSTREAM_TOKEN}"))
        );
    }
    assert_eq!(world.upstream.count(), 2);
    payshim.stop().await;
}

#[tokio::test]
async fn request_ids_are_unique_uuid_v7() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(HttpVersion::Http2);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = send(
            &client,
            payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 201);
        ids.push(assert_request_id(&resp));
        let resp = send(
            &client,
            Request::get(payshim.url("/nope"))
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
        ids.push(assert_request_id(&resp));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    payshim.stop().await;
}
