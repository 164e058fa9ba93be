//! The token exchange (issue 4): `POST /oauth/access_token` is answered by payshim itself
//! with a stateless session token (`ps1.<payload>.<mac>`), never forwarded, and that token
//! then stands in for the store's credential on payment routes.
//!
//! Each test starts its own upstream double and payshim on kernel-chosen ports.
//!
//! `grants.rs`: the exchange itself, the implicit and client_credentials grants and the
//! 401s and 400s for unknown clients and malformed requests; `session_tokens.rs`: the
//! token on payment routes, in place of the store's credential and never forwarded, and
//! its refusals (expired, another session key, forged or mangled, a route the client may
//! not use). The helpers they share are here.

mod grants;
mod session_tokens;

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::Value;

use support::payshim::{Payshim, payment_body, payment_request, sha256_hex, toml_str};
use support::{Recorded, TestClient, TestResponse, World};

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
