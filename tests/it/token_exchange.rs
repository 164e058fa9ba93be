//! The token exchange (issue 4): `POST /oauth/access_token` is answered by payshim itself
//! with a stateless session token (`ps1.<payload>.<mac>`), never forwarded, and that token
//! then stands in for the store's credential on payment routes.
//!
//! Each test starts its own upstream double and payshim on kernel-chosen ports.

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::Value;

use support::payshim::{
    ORDER, Payshim, SESSION_KEY, STOREFRONT_KEY, UPSTREAM_TOKEN, payment_body, payment_request,
    sha256_hex, toml_str,
};
use support::{HttpVersion, Recorded, TestClient, TestResponse, World, moltin_like};

/// The browser storefront's public client id (implicit grant).
const PUBLIC_ID: &str = "pk-browser-3d1f9a7c0b2e";
/// The server storefront's secret (client_credentials grant; only its hash is configured).
const SERVER_SECRET: &str = "sf-server-secret-91ab7e3c55d2f04a";
/// Another session key, for "a token from another deployment" cases.
const OTHER_SESSION_KEY: &str = "other-session-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const TRANSACTION: &str = "3f2a1b0c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const FORM: &str = "application/x-www-form-urlencoded";

/// What this file adds to `World` (a trait: other files add their own).
trait WorldExt {
    fn config(&self, session_key: &str, ttl: Option<&str>) -> String;
    fn assert_nothing_forwarded(&self);
}

impl WorldExt for World {
    /// `base_config` (client `web-eu` with an API key, static upstream token) plus a
    /// session key and two token-exchange clients:
    /// - `web-browser`: `public_id`, may only pay (`routes = ["payments"]`);
    /// - `server-app`: `secret_sha256`, every route.
    fn config(&self, session_key: &str, ttl: Option<&str>) -> String {
        let mut toml = self.base_config();
        let ttl = ttl
            .map(|t| format!("session_ttl = {}\n", toml_str(t)))
            .unwrap_or_default();
        toml.push_str(&format!(
            r#"
[auth]
session_key = {key}
{ttl}
[[clients]]
id = "web-browser"
public_id = "{PUBLIC_ID}"
allowed_origins = ["https://shop.example"]
routes = ["payments"]

[[clients]]
id = "server-app"
secret_sha256 = "{secret_hash}"
"#,
            key = toml_str(session_key),
            secret_hash = sha256_hex(SERVER_SECRET),
        ));
        toml
    }

    /// Token calls are answered by payshim: the upstream never sees one.
    fn assert_nothing_forwarded(&self) {
        let seen: Vec<String> = self
            .upstream
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(seen.is_empty(), "forwarded upstream: {seen:?}");
    }
}

fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `POST /oauth/access_token` with an optional content type and a raw body.
fn token_request(payshim: &Payshim, content_type: Option<&str>, body: &str) -> Request<Bytes> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(payshim.url("/oauth/access_token"));
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder
        .body(Bytes::copy_from_slice(body.as_bytes()))
        .expect("build token request")
}

async fn send(client: &TestClient, req: Request<Bytes>) -> TestResponse {
    tokio::time::timeout(Duration::from_secs(15), client.send(req))
        .await
        .expect("payshim answered within 15 s")
        .expect("request completes")
}

/// The implicit grant as the SDK sends it; the answer's JSON (asserted 200).
async fn implicit(payshim: &Payshim, client: &TestClient) -> Value {
    let resp = send(
        client,
        token_request(
            payshim,
            Some(FORM),
            &format!("grant_type=implicit&client_id={PUBLIC_ID}"),
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

/// payshim's own error: status, JSON content type, the API error format.
fn assert_api_error(resp: &TestResponse, status: u16) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let json = resp.json();
    assert_eq!(json["errors"][0]["status"], status, "{json}");
    assert!(json["errors"][0]["title"].is_string(), "{json}");
    assert!(json["errors"][0]["detail"].is_string(), "{json}");
    assert!(resp.header("x-request-id").is_some());
}

/// A payment with `Authorization: Bearer <token>`.
async fn pay(payshim: &Payshim, client: &TestClient, token: &str) -> TestResponse {
    let auth = format!("Bearer {token}");
    send(
        client,
        payment_request(payshim, &[("authorization", &auth)], &payment_body()),
    )
    .await
}

/// Neither the session token nor any other storefront credential reached the upstream.
fn assert_not_forwarded(req: &Recorded, secret: &str) {
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(secret),
            "storefront credential forwarded in {name}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&req.body).contains(secret),
        "storefront credential forwarded in the body"
    );
}

/// A session token's parts: (payload text, mac).
fn split_token(token: &str) -> (String, String) {
    let rest = token
        .strip_prefix("ps1.")
        .unwrap_or_else(|| panic!("not a ps1 token: {token}"));
    let (payload, mac) = rest.split_once('.').expect("ps1.<payload>.<mac>");
    let payload =
        String::from_utf8(B64.decode(payload).expect("base64url payload")).expect("UTF-8 payload");
    (payload, mac.to_string())
}

#[tokio::test]
async fn implicit_grant_returns_a_session_token_in_the_api_shape() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(SESSION_KEY, None)).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        let resp = send(
            &client,
            token_request(
                &payshim,
                Some(FORM),
                &format!("grant_type=implicit&client_id={PUBLIC_ID}"),
            ),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(
            resp.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
        let json = resp.json();
        let token = json["access_token"].as_str().expect("access_token string");
        assert!(token.starts_with("ps1."), "{token}");
        assert_eq!(json["token_type"], "Bearer");
        assert_eq!(json["identifier"], "implicit");
        // Default lifetime 1 h; `expires` is epoch seconds (what the SDK compares with).
        assert_eq!(json["expires_in"], 3600, "{json}");
        let expires = json["expires"].as_u64().expect("expires is an integer");
        let now = now_epoch();
        assert!(
            (now + 3598..=now + 3601).contains(&expires),
            "expires {expires}, now {now}"
        );
        let (payload, _) = split_token(token);
        assert_eq!(payload, format!("web-browser|{expires}"));
    }
    world.assert_nothing_forwarded();
    payshim.stop().await;
}

#[tokio::test]
async fn client_credentials_grant_with_id_and_secret() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(SESSION_KEY, Some("15m"))).await;
    let client = payshim.client(HttpVersion::Http1);
    // The secret is form-encoded like the SDK does (encodeURIComponent).
    let resp = send(
        &client,
        token_request(
            &payshim,
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            &format!(
                "grant_type=client_credentials&client_id=server-app&client_secret={SERVER_SECRET}"
            ),
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let json = resp.json();
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["identifier"], "client_credentials");
    assert_eq!(json["expires_in"], 900);
    let token = json["access_token"].as_str().expect("access_token");
    assert!(!token.contains(SERVER_SECRET));
    assert_eq!(split_token(token).0.split('|').next(), Some("server-app"));
    world.assert_nothing_forwarded();

    // That token pays, as server-app.
    let resp = pay(&payshim, &client, token).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

#[tokio::test]
async fn wrong_secret_and_unknown_clients_are_401() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(SESSION_KEY, None)).await;
    let client = payshim.client(HttpVersion::Http1);
    let cases = [
        // Wrong secret.
        "grant_type=client_credentials&client_id=server-app&client_secret=not-the-secret"
            .to_string(),
        // The right secret for an unknown id.
        format!("grant_type=client_credentials&client_id=nobody&client_secret={SERVER_SECRET}"),
        // A client without a secret cannot use client_credentials, whatever it sends.
        "grant_type=client_credentials&client_id=web-browser&client_secret=".to_string(),
        format!(
            "grant_type=client_credentials&client_id=web-browser&client_secret={SERVER_SECRET}"
        ),
        // An unknown public id.
        "grant_type=implicit&client_id=pk-unknown".to_string(),
        // Client ids are not public ids: the implicit grant needs the public one.
        "grant_type=implicit&client_id=web-browser".to_string(),
        "grant_type=implicit&client_id=server-app".to_string(),
        // An API key is not a public id either.
        format!("grant_type=implicit&client_id={STOREFRONT_KEY}"),
    ];
    for body in &cases {
        let resp = send(&client, token_request(&payshim, Some(FORM), body)).await;
        assert_api_error(&resp, 401);
        assert!(resp.json().get("access_token").is_none());
        // No error message echoes what was sent.
        assert!(!resp.text().contains(SERVER_SECRET), "{body}");
        assert!(!resp.text().contains("not-the-secret"), "{body}");
    }
    world.assert_nothing_forwarded();
    payshim.stop().await;
}

#[tokio::test]
async fn malformed_token_requests_are_400() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(SESSION_KEY, None)).await;
    let client = payshim.client(HttpVersion::Http1);
    let implicit_body = format!("grant_type=implicit&client_id={PUBLIC_ID}");
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        (
            "missing grant_type",
            Some(FORM),
            format!("client_id={PUBLIC_ID}"),
        ),
        (
            "unsupported grant",
            Some(FORM),
            format!("grant_type=password&client_id={PUBLIC_ID}&username=a&password=b"),
        ),
        (
            "refresh_token grant",
            Some(FORM),
            format!("grant_type=refresh_token&client_id={PUBLIC_ID}&refresh_token=x"),
        ),
        (
            "missing client_id",
            Some(FORM),
            "grant_type=implicit".into(),
        ),
        (
            "client_credentials without a secret",
            Some(FORM),
            "grant_type=client_credentials&client_id=server-app".into(),
        ),
        (
            "duplicate parameter",
            Some(FORM),
            format!("grant_type=implicit&grant_type=client_credentials&client_id={PUBLIC_ID}"),
        ),
        (
            "not a form",
            Some(FORM),
            "{{{ this is not a form }}}".into(),
        ),
        ("empty body", Some(FORM), String::new()),
        (
            "JSON content type",
            Some("application/json"),
            format!(r#"{{"grant_type":"implicit","client_id":"{PUBLIC_ID}"}}"#),
        ),
        (
            "a valid form sent as JSON",
            Some("application/json"),
            implicit_body.clone(),
        ),
        ("no content type", None, implicit_body.clone()),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            implicit_body,
        ),
    ];
    for (name, content_type, body) in &cases {
        let resp = send(&client, token_request(&payshim, *content_type, body)).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        assert_api_error(&resp, 400);
    }
    // Only POST is the token exchange; anything else is not a route.
    let resp = send(
        &client,
        Request::get(payshim.url("/oauth/access_token"))
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_api_error(&resp, 404);
    world.assert_nothing_forwarded();
    payshim.stop().await;
}

#[tokio::test]
async fn session_token_pays_with_the_store_token_and_is_never_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(SESSION_KEY, None)).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        let before = world.upstream.count();
        let token = implicit(&payshim, &client).await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            world.upstream.count(),
            before,
            "the token exchange was forwarded"
        );
        let resp = pay(&payshim, &client, &token).await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        assert_eq!(resp.json()["data"]["type"], "transaction");
        // The old SDKs' `Bearer: <t>` form works with a session token too.
        let resp = send(
            &client,
            payment_request(
                &payshim,
                &[("authorization", &format!("Bearer: {token}"))],
                &payment_body(),
            ),
        )
        .await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        let recorded = world.upstream.requests();
        for req in &recorded {
            assert_eq!(req.method, Method::POST);
            assert_eq!(req.path, format!("/v2/orders/{ORDER}/payments"));
            assert_eq!(
                req.header("authorization"),
                Some(format!("Bearer {UPSTREAM_TOKEN}"))
            );
            assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
            assert_not_forwarded(req, &token);
            assert_not_forwarded(req, "ps1.");
        }
    }
    assert_eq!(world.upstream.count(), 4);
    // The payments are attributed to the browser client in the audit log.
    let audit = payshim::audit::read_records(&world.audit.path().join("payshim.jsonl")).unwrap();
    let forwarded: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "payment.forwarded")
        .collect();
    assert_eq!(forwarded.len(), 4, "{audit}");
    assert!(forwarded.iter().all(|r| r["client_id"] == "web-browser"));
    payshim.stop().await;
}

#[tokio::test]
async fn expired_session_token_is_401_and_nothing_is_forwarded() {
    let world = World::new(moltin_like()).await;
    // 2 s: `expires` is a whole epoch second, so the token is good for at least 1 s.
    let payshim = Payshim::start(&world.config(SESSION_KEY, Some("2s"))).await;
    let client = payshim.client(HttpVersion::Http1);
    let json = implicit(&payshim, &client).await;
    assert_eq!(json["expires_in"], 2);
    let token = json["access_token"].as_str().unwrap().to_string();
    let expires = json["expires"].as_u64().unwrap();

    let resp = pay(&payshim, &client, &token).await;
    assert_eq!(resp.status, 201, "fresh token refused: {}", resp.text());
    assert_eq!(world.upstream.count(), 1);

    // Wait until the epoch second named by `expires` has begun.
    let until = UNIX_EPOCH + Duration::from_secs(expires) + Duration::from_millis(50);
    if let Ok(wait) = until.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let resp = pay(&payshim, &client, &token).await;
    assert_api_error(&resp, 401);
    assert_eq!(world.upstream.count(), 1, "an expired token was forwarded");

    // A new exchange gives a working token again.
    let fresh = implicit(&payshim, &client).await;
    let resp = pay(&payshim, &client, fresh["access_token"].as_str().unwrap()).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    payshim.stop().await;
}

#[tokio::test]
async fn tokens_are_accepted_by_replicas_with_the_same_key_only() {
    let world = World::new(moltin_like()).await;
    let a = Payshim::start(&world.config(SESSION_KEY, None)).await;
    let b = Payshim::start(&world.config(SESSION_KEY, None)).await;
    let other = Payshim::start(&world.config(OTHER_SESSION_KEY, None)).await;

    // Minted by a replica with the same key: accepted (stateless tokens).
    let token_a = implicit(&a, &a.client(HttpVersion::Http1)).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = pay(&b, &b.client(HttpVersion::Http1), &token_a).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);

    // Minted with another session key: rejected, nothing forwarded.
    let token_other = implicit(&other, &other.client(HttpVersion::Http1)).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = pay(&a, &a.client(HttpVersion::Http1), &token_other).await;
    assert_api_error(&resp, 401);
    // ... and the other way round.
    let resp = pay(&other, &other.client(HttpVersion::Http2), &token_a).await;
    assert_api_error(&resp, 401);
    assert_eq!(world.upstream.count(), 1);
    a.stop().await;
    b.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn forged_and_mangled_tokens_are_401() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(SESSION_KEY, None)).await;
    let client = payshim.client(HttpVersion::Http1);
    let token = implicit(&payshim, &client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (payload, mac) = split_token(&token);
    let (_, expires) = payload.rsplit_once('|').unwrap();
    let expires: u64 = expires.parse().unwrap();
    let forge = |payload: &str| format!("ps1.{}.{mac}", B64.encode(payload));

    let forged = [
        // Another client (server-app may refund: privilege escalation).
        forge(&format!("server-app|{expires}")),
        // A longer life.
        forge(&format!("web-browser|{}", expires + 86_400)),
        // A client that is not configured.
        forge(&format!("admin|{expires}")),
        // The payload kept, the MAC changed in one character.
        {
            let mut m = mac.clone().into_bytes();
            m[0] = if m[0] == b'A' { b'B' } else { b'A' };
            format!(
                "ps1.{}.{}",
                B64.encode(&payload),
                String::from_utf8(m).unwrap()
            )
        },
        // The MAC removed, truncated, or the token cut.
        format!("ps1.{}", B64.encode(&payload)),
        format!("ps1.{}.", B64.encode(&payload)),
        format!("ps1.{}.{}", B64.encode(&payload), &mac[..mac.len() / 2]),
        token[..token.len() - 1].to_string(),
        format!("{token}x"),
        "ps1.".to_string(),
        // Another version prefix with the same parts.
        token.replacen("ps1.", "ps2.", 1),
    ];
    for bad in &forged {
        let resp = pay(&payshim, &client, bad).await;
        assert_api_error(&resp, 401);
    }
    // A forged token cannot reach the refund route either (401 before the route check).
    let refund = Request::post(payshim.url(&format!(
        "/v2/orders/{ORDER}/transactions/{TRANSACTION}/refund"
    )))
    .header("authorization", format!("Bearer {}", forged[0]))
    .header("content-type", "application/json")
    .body(Bytes::from_static(b"{}"))
    .unwrap();
    assert_api_error(&send(&client, refund).await, 401);
    assert_eq!(world.upstream.count(), 0, "a forged token was forwarded");
    // The genuine token still works.
    assert_eq!(pay(&payshim, &client, &token).await.status, 201);
    payshim.stop().await;
}

#[tokio::test]
async fn route_permissions_are_per_client() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(SESSION_KEY, None)).await;
    let client = payshim.client(HttpVersion::Http1);
    let token = implicit(&payshim, &client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {token}");

    // web-browser may only pay.
    let txn = |action: &str| format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}/{action}");
    for (method, path, body) in [
        (Method::POST, txn("refund"), r#"{"amount":100}"#),
        (Method::POST, txn("capture"), ""),
        (Method::POST, txn("cancel"), ""),
        (Method::GET, format!("/v2/orders/{ORDER}/transactions"), ""),
        (
            Method::GET,
            format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}"),
            "",
        ),
    ] {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(payshim.url(&path))
            .header("authorization", &bearer);
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let resp = send(
            &client,
            req.body(Bytes::copy_from_slice(body.as_bytes())).unwrap(),
        )
        .await;
        assert_api_error(&resp, 403);
        assert_eq!(world.upstream.count(), 0, "{method} {path} was forwarded");
    }
    let resp = pay(&payshim, &client, &token).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);

    // A client without `routes` may refund (the same route, to show the 403 is per client).
    let resp = send(
        &client,
        Request::post(payshim.url(&txn("refund")))
            .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
            .header("content-type", "application/json")
            .body(Bytes::from_static(br#"{"data":{"amount":100}}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        recorded[1].path,
        format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}/refund")
    );
    payshim.stop().await;
}
