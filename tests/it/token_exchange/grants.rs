//! The exchange itself: the implicit grant (public id) and the client_credentials grant
//! (id and secret) answer a session token in the API's shape without forwarding anything;
//! wrong secrets and unknown clients are 401s, malformed requests 400s.

use bytes::Bytes;
use http::Request;

use super::{
    FORM, PUBLIC_ID, SERVER_SECRET, WorldExt, assert_api_error, now_epoch, pay, send, split_token,
    token_request,
};
use crate::support;
use support::payshim::{Payshim, SESSION_KEY, STOREFRONT_KEY};
use support::{HttpVersion, World, moltin_like};

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
