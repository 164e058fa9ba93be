//! What the page talks to: the API double (which declines one order's payment), payshim's
//! config for the storefront's browser client, and the session tokens seeded into the page
//! that payshim no longer accepts (another deployment's key; expired).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};

use super::{DECLINED_ORDER, EXPIRED_ORDER, OLD_SESSION_KEY, PUBLIC_ID, declined};
use crate::support;
use support::payshim::{Payshim, SESSION_KEY, base_config, set_key, toml_str};
use support::{HttpVersion, TestPki, Upstream, moltin_like};

/// `moltin_like`, except that a payment for `DECLINED_ORDER` is declined.
pub(super) fn api() -> support::Handler {
    let fallback = moltin_like();
    support::handler(move |req| {
        if req.path == format!("/v2/orders/{DECLINED_ORDER}/payments") {
            return support::Reply::json(400, declined());
        }
        fallback(req)
    })
}

/// payshim for the storefront: the browser client `web-shop` (implicit grant) allowed
/// from `origin` only, signing session tokens with `session_key`.
pub(super) fn config(
    pki: &TestPki,
    upstream: &Upstream,
    audit: &Path,
    session_key: &str,
    origin: &str,
) -> String {
    let mut toml = base_config(pki, &upstream.url(), audit);
    toml.push_str(&format!(
        r#"
[auth]
session_key = {key}

[[clients]]
id = "web-shop"
public_id = "{PUBLIC_ID}"
allowed_origins = [{origin}]
routes = ["payments"]
"#,
        key = toml_str(session_key),
        origin = toml_str(origin),
    ));
    toml
}

/// The answer of an implicit grant by a payshim started on `toml` (stopped again).
async fn token_exchange(toml: &str) -> Value {
    let issuer = Payshim::start(toml).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(issuer.url("/oauth/access_token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from(format!(
            "grant_type=implicit&client_id={PUBLIC_ID}"
        )))
        .unwrap();
    let answer = issuer
        .client(HttpVersion::Http2)
        .send(req)
        .await
        .expect("token exchange");
    issuer.stop().await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

/// A session token from an earlier deployment (another session key), as its token
/// exchange answered it: unexpired by its own `expires`, but no longer accepted.
pub(super) async fn stale_token(
    pki: &TestPki,
    upstream: &Upstream,
    audit: &Path,
    origin: &str,
) -> Value {
    token_exchange(&config(pki, upstream, audit, OLD_SESSION_KEY, origin)).await
}

/// A session token signed with the current key that has expired: issued with
/// `auth.session_ttl = "1s"`, then waited on until `serving` refuses it (401). Its
/// `expires` is moved an hour on, as a browser whose clock runs an hour behind the
/// server's sees it, so that the SDK still sends it.
pub(super) async fn expired_token(
    pki: &TestPki,
    upstream: &Upstream,
    audit: &Path,
    origin: &str,
    serving: &Payshim,
) -> Value {
    let toml = config(pki, upstream, audit, SESSION_KEY, origin);
    let mut answer = token_exchange(&set_key(&toml, "auth", "session_ttl", Some("\"1s\""))).await;
    let token = answer["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    // A route the client may not use: 403 while the token is valid, 401 once it expired;
    // never forwarded either way.
    let probe = serving.url(&format!("/v2/orders/{EXPIRED_ORDER}/transactions"));
    let client = serving.client(HttpVersion::Http2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .get(&probe, Some(&token))
            .await
            .expect("probe")
            .status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 403, "the probe with a valid token");
        assert!(
            Instant::now() < deadline,
            "the 1 s token still valid after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answer["expires"] = json!(answer["expires"].as_u64().expect("expires") + 3600);
    answer
}
