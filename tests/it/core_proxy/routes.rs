//! Which requests payshim serves at all: unknown routes are 404 and a missing or wrong
//! storefront key is 401 (both in the API error format, never forwarded), a configured
//! passthrough route is forwarded while similar ones are not, and the admin endpoints are
//! on the admin listener only.

use crate::support;

use bytes::Bytes;
use http::{Method, Request};

use super::{TRANSACTION, WorldExt, assert_api_error, assert_request_id, bearer, send};
use support::payshim::{
    ORDER, Payshim, STOREFRONT_KEY, UPSTREAM_TOKEN, admin_get, payment_body, payment_request,
};
use support::{HttpVersion, World, moltin_like};

#[tokio::test]
async fn unknown_routes_are_404_json_and_never_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        for (method, path) in [
            (Method::GET, "/v2/products".to_string()),
            (Method::GET, "/".to_string()),
            (Method::GET, format!("/v2/orders/{ORDER}")),
            (Method::DELETE, format!("/v2/orders/{ORDER}")),
            (Method::GET, format!("/v2/orders/{ORDER}/payments")),
            (Method::POST, format!("/v2/orders/{ORDER}/payments/")),
            (
                Method::POST,
                format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}/void"),
            ),
        ] {
            for auth in [Some(bearer()), None] {
                let mut builder = Request::builder()
                    .method(method.clone())
                    .uri(payshim.url(&path))
                    .header("content-type", "application/json");
                if let Some(auth) = &auth {
                    builder = builder.header("authorization", auth);
                }
                let body = if method == Method::POST {
                    Bytes::from(payment_body())
                } else {
                    Bytes::new()
                };
                let resp = send(&client, builder.body(body).unwrap()).await.unwrap();
                assert_api_error(&resp, 404);
            }
        }
    }
    assert_eq!(world.upstream.count(), 0, "{:?}", world.upstream.requests());
    payshim.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_storefront_key_is_401_json_and_never_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let wrong = [
        None,
        Some("Bearer not-the-storefront-key".to_string()),
        Some(format!("Bearer {UPSTREAM_TOKEN}")),
        Some(format!("Bearer {STOREFRONT_KEY}x")),
        Some(format!("Basic {STOREFRONT_KEY}")),
        Some("Bearer".to_string()),
        Some(String::new()),
    ];
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        for auth in &wrong {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let resp = send(
                &client,
                payment_request(&payshim, &headers, &payment_body()),
            )
            .await
            .unwrap();
            assert_api_error(&resp, 401);
            assert!(
                !resp.text().contains(STOREFRONT_KEY) && !resp.text().contains(UPSTREAM_TOKEN),
                "the error echoes a credential: {}",
                resp.text()
            );

            let mut get = Request::get(payshim.url(&format!("/v2/orders/{ORDER}/transactions")));
            if let Some(a) = auth {
                get = get.header("authorization", a);
            }
            let resp = send(&client, get.body(Bytes::new()).unwrap())
                .await
                .unwrap();
            assert_api_error(&resp, 401);
        }
    }
    assert_eq!(world.upstream.count(), 0, "{:?}", world.upstream.requests());
    payshim.stop().await;
}

#[tokio::test]
async fn configured_passthrough_route_is_forwarded_and_similar_ones_are_not() {
    let world = World::new(moltin_like()).await;
    let mut config = world.config();
    config.push_str("\n[[routes]]\nmethod = \"GET\"\npath = \"/v2/orders/{uuid}\"\n");
    let payshim = Payshim::start(&config).await;
    let client = payshim.client(HttpVersion::Http1);
    let get = |path: &str| {
        Request::get(payshim.url(path))
            .header("authorization", bearer())
            .body(Bytes::new())
            .unwrap()
    };

    let path = format!("/v2/orders/{ORDER}?include=items");
    let resp = send(&client, get(&path)).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), serde_json::json!({"data": {}}));
    assert_request_id(&resp);
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, Method::GET);
    assert_eq!(recorded[0].path, path);
    assert_eq!(
        recorded[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );

    // Same shape, not configured: other method, longer path, not a UUID.
    for req in [
        Request::delete(payshim.url(&format!("/v2/orders/{ORDER}")))
            .header("authorization", bearer())
            .body(Bytes::new())
            .unwrap(),
        get(&format!("/v2/orders/{ORDER}/items")),
        get("/v2/orders/12345"),
        get("/v2/customers/7d3c1a52-9e4f-4b8a-8c6d-2e5f4a3b1c0d"),
    ] {
        let uri = req.uri().clone();
        let resp = send(&client, req).await.unwrap();
        assert_eq!(resp.status, 404, "{uri}");
        assert_api_error(&resp, 404);
    }
    // And the configured route still needs a storefront key.
    let resp = send(
        &client,
        Request::get(payshim.url(&format!("/v2/orders/{ORDER}")))
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 401);
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

#[tokio::test]
async fn admin_listener_serves_healthz_and_readyz() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let (status, body) = admin_get(payshim.admin, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // Plain HTTP through the test client too.
    let resp = support::TestClient::new(&payshim.ca_pem, HttpVersion::Http1)
        .get(&payshim.admin_url("/healthz"), None)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    // The admin endpoints are not on the public listener.
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        Request::get(payshim.url("/healthz"))
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 404);
    assert_eq!(world.upstream.count(), 0);
    payshim.stop().await;
}
