//! The session token on payment routes: it pays with the store's own token upstream and
//! is never forwarded; expired tokens, tokens minted under another session key, forged or
//! mangled tokens are 401s with nothing forwarded, and a client's `routes` limit it (403).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::Value;

use super::{
    B64, OTHER_SESSION_KEY, TRANSACTION, WorldExt, assert_api_error, assert_not_forwarded,
    implicit, pay, send, split_token,
};
use crate::support;
use support::payshim::{
    ORDER, Payshim, SESSION_KEY, STOREFRONT_KEY, UPSTREAM_TOKEN, payment_body, payment_request,
};
use support::{HttpVersion, World, moltin_like};

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
