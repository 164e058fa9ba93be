//! Credentials changed without a restart: a storefront added and another revoked (its
//! payment in flight finishes under the config it started with), new upstream credentials
//! fetching a new token (and the log level), and a session key rotation that keeps the
//! tokens issued under the previous key until it is dropped.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::{OK, Scene, WAIT, get_status, metric, rewrite_config, wait_metric};
use crate::support::Upstream;
use crate::support::cards::Binary;
use crate::support::payshim::{
    ORDER, SESSION_KEY, STOREFRONT_KEY, payment_body, set_key, sha256_hex, toml_str,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storefront_is_added_and_another_revoked_by_reload() {
    let scene = Scene::new(Duration::from_millis(1500)).await;
    let config = scene.config("\"off\"");
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    const NEW_KEY: &str = "storefront-key-added-by-reload-4c2e9a7b1d";
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    assert_eq!(get_status(&client, &binary, NEW_KEY).await, 401);
    // A payment of the storefront about to be revoked, in flight during the reload: it
    // finishes with the config it started with.
    let in_flight = {
        let client = scene.client();
        let binary_url = binary.url("");
        tokio::spawn(async move {
            let request = Request::post(format!("{binary_url}/v2/orders/{ORDER}/payments"))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
                .body(Bytes::from(payment_body()))
                .unwrap();
            client.send(request).await
        })
    };
    let forwarded = scene.upstream.wait_for_requests(2, WAIT).await;
    assert!(forwarded, "payment never forwarded");

    let replaced = config.replace(
        &format!(
            "id = \"web-eu\"\napi_key_sha256 = \"{}\"",
            sha256_hex(STOREFRONT_KEY)
        ),
        &format!(
            "id = \"web-us\"\napi_key_sha256 = \"{}\"",
            sha256_hex(NEW_KEY)
        ),
    );
    assert_ne!(replaced, config);
    rewrite_config(&binary, &replaced);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(get_status(&client, &binary, NEW_KEY).await, 200);
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 401);
    let answer = in_flight
        .await
        .unwrap()
        .expect("the payment in flight is answered");
    assert_eq!(answer.status, 201, "{}", answer.text());
    let audit = payshim::audit::read_records(&scene.dir.path().join("audit").join("payshim.jsonl"));
    let completed = audit
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"payment.completed\"") && l.contains("\"web-eu\""))
        .count();
    assert_eq!(completed, 1, "completed under the client it started with");
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_upstream_credentials_fetch_a_new_token_and_the_log_level_changes() {
    const CLIENT_ID: &str = "store-client-id-reload-1";
    let scene = Scene::new(Duration::ZERO).await;
    let config = set_key(&scene.config("\"off\""), "upstream.auth", "token", None);
    let config = set_key(
        &config,
        "upstream.auth",
        "client_id",
        Some(&toml_str(CLIENT_ID)),
    );
    let with_secret = |secret: &str| {
        set_key(
            &config,
            "upstream.auth",
            "client_secret",
            Some(&toml_str(secret)),
        )
    };
    let config = with_secret("store-client-secret-before-rotation-1");
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    let expiry = "payshim_upstream_token_expiry_timestamp_seconds";
    assert!(metric(&binary, expiry).await > 0.0);
    let bearers = |upstream: &Upstream| -> Vec<Option<String>> {
        upstream
            .requests()
            .iter()
            .filter(|r| r.path.contains("/transactions"))
            .map(|r| r.header("authorization"))
            .collect()
    };
    assert_eq!(
        bearers(&scene.upstream),
        [Some("Bearer upstream-token-1".to_string())]
    );

    // New credentials (and a quieter log): a new token is fetched at once and used.
    let rotated = with_secret("store-client-secret-after-rotation-2");
    rewrite_config(
        &binary,
        &set_key(&rotated, "log", "level", Some("\"error\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    let last = bearers(&scene.upstream).pop().unwrap();
    assert_eq!(last.as_deref(), Some("Bearer upstream-token-2"));
    let token_calls: Vec<String> = scene
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/oauth/access_token"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(token_calls.len(), 2);
    assert!(
        token_calls[1].contains("after-rotation-2"),
        "{}",
        token_calls[1]
    );

    // At level error, a SIGHUP's info line is no longer written.
    let received = || {
        let log = std::fs::read_to_string(&binary.stdout).unwrap();
        log.matches("SIGHUP received").count()
    };
    let before = received();
    binary.signal("HUP");
    wait_metric(&binary, OK, 2.0).await;
    assert_eq!(received(), before, "info lines after log.level = \"error\"");
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_outlives_a_session_key_rotation_and_a_forged_one_does_not() {
    const NEW_SESSION_KEY: &str = "session-key-rotated-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let scene = Scene::new(Duration::ZERO).await;
    let browser = "\n[[clients]]\nid = \"web-browser\"\npublic_id = \"pk-browser-1\"\n";
    let auth = format!("\n[auth]\nsession_key = {}\n", toml_str(SESSION_KEY));
    let config = format!("{}{browser}{auth}", scene.config("\"off\""));
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    let issue = async |binary: &Binary| {
        let resp = client
            .send(
                Request::post(binary.url("/oauth/access_token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Bytes::from("grant_type=implicit&client_id=pk-browser-1"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()["access_token"].as_str().unwrap().to_string()
    };
    let before = issue(&binary).await;
    assert_eq!(get_status(&client, &binary, &before).await, 200);

    let rotated = set_key(
        &config,
        "auth",
        "session_key",
        Some(&toml_str(NEW_SESSION_KEY)),
    );
    let rotated = set_key(
        &rotated,
        "auth",
        "previous_session_keys",
        Some(&format!("[{}]", toml_str(SESSION_KEY))),
    );
    rewrite_config(&binary, &rotated);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(
        get_status(&client, &binary, &before).await,
        200,
        "issued before the rotation"
    );
    let after = issue(&binary).await;
    assert_ne!(after, before);
    assert_eq!(get_status(&client, &binary, &after).await, 200);
    // The same payload under a MAC that is not one of the keys'.
    let (signed, mac) = after.rsplit_once('.').unwrap();
    let flipped = if mac.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &mac[1..]);
    assert_eq!(get_status(&client, &binary, &forged).await, 401);

    // Once the old key is dropped, its tokens are refused.
    rewrite_config(
        &binary,
        &set_key(
            &config,
            "auth",
            "session_key",
            Some(&toml_str(NEW_SESSION_KEY)),
        ),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 2.0).await;
    assert_eq!(get_status(&client, &binary, &before).await, 401);
    assert_eq!(get_status(&client, &binary, &after).await, 200);
    binary.stop().await;
}
