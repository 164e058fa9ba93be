//! CORS for browser storefronts (issue 4): preflights answered per the configured
//! `allowed_origins` (exact match, never `*`), actual requests decorated for an allowed
//! origin and refused (403, nothing forwarded) for any other.
//!
//! Two clients: `web-browser` (public id, origin https://shop.example) and `web-eu` (API
//! key, no browser origin at all).

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};

use support::payshim::{
    ORDER, Payshim, SESSION_KEY, STOREFRONT_KEY, UPSTREAM_TOKEN, payment_body, payment_request,
    toml_str,
};
use support::{HttpVersion, TestClient, TestResponse, World, moltin_like};

const SHOP: &str = "https://shop.example";
const SHOP_STAGING: &str = "https://staging.shop.example:8443";
const PUBLIC_ID: &str = "pk-browser-cors-5e6f7a8b";
const TRANSACTION: &str = "3f2a1b0c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

/// The request headers the official SDK sends (its preflight asks for these).
const SDK_HEADERS: [&str; 5] = [
    "authorization",
    "content-type",
    "x-moltin-sdk-language",
    "x-moltin-sdk-version",
    "x-moltin-application",
];

/// Origins that must not pass for `web-browser`: near misses of the allowed ones.
const DENIED: [&str; 8] = [
    "https://evil.example",
    "http://shop.example",
    "https://shop.example:8443",
    "https://shop.example.evil.example",
    "https://www.shop.example",
    "https://SHOP.example",
    "https://shop.example/",
    "null",
];

/// What this file adds to `World` (a trait: other files add their own).
trait WorldExt {
    fn config(&self) -> String;
    async fn start(&self) -> Payshim;
}

impl WorldExt for World {
    fn config(&self) -> String {
        let mut toml = self.base_config();
        toml.push_str(&format!(
            r#"
[auth]
session_key = {key}

[[clients]]
id = "web-browser"
public_id = "{PUBLIC_ID}"
allowed_origins = ["{SHOP}", "{SHOP_STAGING}"]
"#,
            key = toml_str(SESSION_KEY),
        ));
        toml
    }

    async fn start(&self) -> Payshim {
        Payshim::start(&self.config()).await
    }
}

async fn send(client: &TestClient, req: Request<Bytes>) -> TestResponse {
    tokio::time::timeout(Duration::from_secs(15), client.send(req))
        .await
        .expect("payshim answered within 15 s")
        .expect("request completes")
}

/// A preflight as a browser sends it before the SDK's payment.
fn preflight(payshim: &Payshim, path: &str, origin: Option<&str>) -> Request<Bytes> {
    let mut builder = Request::builder()
        .method(Method::OPTIONS)
        .uri(payshim.url(path))
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", SDK_HEADERS.join(","));
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    builder.body(Bytes::new()).expect("build preflight")
}

fn payments_path() -> String {
    format!("/v2/orders/{ORDER}/payments")
}

/// A session token for `web-browser` (token exchange without an Origin, like a test).
async fn session_token(payshim: &Payshim, client: &TestClient) -> String {
    let req = Request::post(payshim.url("/oauth/access_token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from(format!(
            "grant_type=implicit&client_id={PUBLIC_ID}"
        )))
        .unwrap();
    let resp = send(client, req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["access_token"].as_str().unwrap().to_string()
}

/// A comma-separated header as a set of lower-case tokens.
fn tokens(resp: &TestResponse, name: &str) -> Vec<String> {
    resp.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `Access-Control-Allow-Origin` is exactly `origin` (one value, never `*`), and caches
/// are told the answer depends on the Origin.
fn assert_allows(resp: &TestResponse, origin: &str) {
    let values: Vec<_> = resp
        .headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(
        values.len(),
        1,
        "ACAO values {values:?} (status {})",
        resp.status
    );
    assert_eq!(values[0], origin);
    assert_ne!(values[0], "*");
    assert!(
        tokens(resp, "vary").contains(&"origin".to_string()),
        "no Vary: Origin: {:?}",
        resp.headers
    );
}

fn assert_no_acao(resp: &TestResponse) {
    assert!(
        resp.headers.get("access-control-allow-origin").is_none(),
        "ACAO on a {} answer: {:?}",
        resp.status,
        resp.headers
    );
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_204_with_exact_origin_and_sdk_headers() {
    let world = World::new(moltin_like()).await;
    let payshim = world.start().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        for origin in [SHOP, SHOP_STAGING] {
            for path in [
                payments_path(),
                // The SDK's first call from a browser: the token exchange, with its
                // X-MOLTIN-SDK-* headers, so it is preflighted too.
                "/oauth/access_token".to_string(),
                format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}/capture"),
            ] {
                let resp = send(&client, preflight(&payshim, &path, Some(origin))).await;
                assert_eq!(resp.status, 204, "{path} from {origin}: {}", resp.text());
                assert!(resp.body.is_empty());
                assert_allows(&resp, origin);
                let methods = tokens(&resp, "access-control-allow-methods");
                assert!(methods.contains(&"post".to_string()), "{methods:?}");
                let allowed = tokens(&resp, "access-control-allow-headers");
                for header in SDK_HEADERS {
                    assert!(
                        allowed.contains(&header.to_string()),
                        "{header} not in allow-headers {allowed:?}"
                    );
                }
                assert!(!allowed.contains(&"*".to_string()), "{allowed:?}");
                let max_age = resp.header("access-control-max-age");
                assert!(
                    max_age
                        .as_deref()
                        .and_then(|m| m.parse::<u32>().ok())
                        .is_some(),
                    "max-age {max_age:?}"
                );
            }
            // A read route's preflight allows GET.
            let resp = send(
                &client,
                preflight(
                    &payshim,
                    &format!("/v2/orders/{ORDER}/transactions"),
                    Some(origin),
                ),
            )
            .await;
            assert_eq!(resp.status, 204);
            assert!(tokens(&resp, "access-control-allow-methods").contains(&"get".to_string()));
        }
    }
    assert_eq!(world.upstream.count(), 0, "a preflight was forwarded");
    payshim.stop().await;
}

#[tokio::test]
async fn preflight_from_a_denied_origin_is_403() {
    let world = World::new(moltin_like()).await;
    let payshim = world.start().await;
    let client = payshim.client(HttpVersion::Http1);
    for origin in DENIED {
        let resp = send(&client, preflight(&payshim, &payments_path(), Some(origin))).await;
        assert_eq!(resp.status, 403, "preflight from {origin}: {}", resp.text());
        assert_no_acao(&resp);
        assert!(resp.header("access-control-allow-headers").is_none());
        assert_eq!(resp.json()["errors"][0]["status"], 403);
    }
    // No Origin at all is not a preflight payshim can allow.
    let resp = send(&client, preflight(&payshim, &payments_path(), None)).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_no_acao(&resp);
    // Preflight of an unknown route: nothing to allow.
    let resp = send(&client, preflight(&payshim, "/v2/products", Some(SHOP))).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(world.upstream.count(), 0);
    payshim.stop().await;
}

#[tokio::test]
async fn actual_request_from_an_allowed_origin_is_forwarded_and_decorated() {
    let world = World::new(moltin_like()).await;
    let payshim = world.start().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        // The token exchange itself answers the browser with ACAO (the SDK must read it).
        let req = Request::post(payshim.url("/oauth/access_token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", SHOP)
            .body(Bytes::from(format!(
                "grant_type=implicit&client_id={PUBLIC_ID}"
            )))
            .unwrap();
        let resp = send(&client, req).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_allows(&resp, SHOP);
        let token = resp.json()["access_token"].as_str().unwrap().to_string();

        let before = world.upstream.count();
        let resp = send(
            &client,
            payment_request(
                &payshim,
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("origin", SHOP),
                    ("x-moltin-sdk-language", "JS"),
                ],
                &payment_body(),
            ),
        )
        .await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        assert_allows(&resp, SHOP);
        let exposed = tokens(&resp, "access-control-expose-headers");
        assert!(exposed.contains(&"x-request-id".to_string()), "{exposed:?}");
        assert_eq!(world.upstream.count(), before + 1);
        let req = world.upstream.requests().pop().unwrap();
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {UPSTREAM_TOKEN}"))
        );
        // The browser's Origin is payshim's business, not the API's.
        assert!(req.header("origin").is_none(), "{:?}", req.headers);
    }
    payshim.stop().await;
}

#[tokio::test]
async fn actual_request_from_a_denied_origin_is_403_and_not_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = world.start().await;
    let client = payshim.client(HttpVersion::Http1);
    let token = session_token(&payshim, &client).await;
    let bearer = format!("Bearer {token}");
    for origin in DENIED {
        let resp = send(
            &client,
            payment_request(
                &payshim,
                &[("authorization", &bearer), ("origin", origin)],
                &payment_body(),
            ),
        )
        .await;
        assert_eq!(resp.status, 403, "payment from {origin}: {}", resp.text());
        assert_eq!(resp.json()["errors"][0]["status"], 403);
        assert_no_acao(&resp);
        // The token exchange from that origin is refused too.
        let req = Request::post(payshim.url("/oauth/access_token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .body(Bytes::from(format!(
                "grant_type=implicit&client_id={PUBLIC_ID}"
            )))
            .unwrap();
        let resp = send(&client, req).await;
        assert_eq!(resp.status, 403, "token from {origin}: {}", resp.text());
        assert!(resp.json().get("access_token").is_none());
    }
    assert_eq!(
        world.upstream.count(),
        0,
        "a denied origin's request was forwarded"
    );
    payshim.stop().await;
}

#[tokio::test]
async fn origins_are_per_client() {
    // https://shop.example is allowed for web-browser, not for web-eu: web-eu's valid API
    // key from that origin is refused, and nothing is forwarded.
    let world = World::new(moltin_like()).await;
    let payshim = world.start().await;
    let client = payshim.client(HttpVersion::Http1);
    let key = format!("Bearer {STOREFRONT_KEY}");
    let resp = send(
        &client,
        payment_request(
            &payshim,
            &[("authorization", &key), ("origin", SHOP)],
            &payment_body(),
        ),
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_no_acao(&resp);
    assert_eq!(world.upstream.count(), 0);
    // Without an Origin (a server storefront), the same key pays.
    let resp = send(
        &client,
        payment_request(&payshim, &[("authorization", &key)], &payment_body()),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

#[tokio::test]
async fn credential_errors_to_an_allowed_origin_carry_acao() {
    // The SDK reacts to a 401 (new token, resend); a browser only lets it read the
    // answer when the CORS headers are there.
    let world = World::new(moltin_like()).await;
    let payshim = world.start().await;
    let client = payshim.client(HttpVersion::Http1);
    for auth in [
        None,
        Some("Bearer ps1.bm9ib2R5fDE.bm90LWEtbWFj".to_string()),
        Some("Bearer not-a-key".to_string()),
    ] {
        let mut headers = vec![("origin", SHOP.to_string())];
        if let Some(a) = &auth {
            headers.push(("authorization", a.clone()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let resp = send(
            &client,
            payment_request(&payshim, &headers, &payment_body()),
        )
        .await;
        assert_eq!(resp.status, 401, "{auth:?}: {}", resp.text());
        assert_allows(&resp, SHOP);
        assert_eq!(resp.json()["errors"][0]["status"], 401);
    }
    // A bad token request from an allowed origin: readable too.
    let req = Request::post(payshim.url("/oauth/access_token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", SHOP)
        .body(Bytes::from_static(
            b"grant_type=implicit&client_id=pk-unknown",
        ))
        .unwrap();
    let resp = send(&client, req).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_allows(&resp, SHOP);
    // A 401 to a denied origin carries no ACAO.
    let resp = send(
        &client,
        payment_request(&payshim, &[("origin", DENIED[0])], &payment_body()),
    )
    .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_no_acao(&resp);
    assert_eq!(world.upstream.count(), 0);
    payshim.stop().await;
}
