//! The log lines themselves: valid JSON under load, batched but never lost, and carrying
//! the request and payment fields an operator needs without any credential.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};

use support::cards::{BRANDS, Binary, pan, utc_year_month};
use support::payshim::{STOREFRONT_KEY, UPSTREAM_TOKEN, base_config, set_key};
use support::{HttpVersion, TestClient, TestPki, Upstream};

use super::{ORDER_OK, card_data, payment_path, upstream_handler};

/// Every line payshim logs in JSON format is a JSON object, under load too.
#[tokio::test]
async fn json_log_lines_stay_valid_json() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = base_config(&pki, &upstream.url(), &dir.path().join("audit"));
    let config = set_key(&config, "log", "level", Some("\"info\""));
    let mut binary = Binary::start(dir.path(), "payshim", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    let year = (utc_year_month().0 + 3).to_string();
    for n in 0..100u64 {
        let brand = BRANDS[(n as usize) % BRANDS.len()];
        let cvv = if brand.cvv_len == 4 { "7373" } else { "737" };
        let body = json!({ "data": card_data("Lovelace", &pan(brand, n), "7", &year, cvv) });
        let req = Request::post(binary.url(&payment_path(ORDER_OK)))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
            .body(Bytes::from(body.to_string()))
            .unwrap();
        let resp = client.send(req).await.unwrap();
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    binary.stop().await;
    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    let bad: Vec<&str> = stdout
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).map_or(true, |v| !v.is_object()))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} log lines are not JSON objects, e.g.:\n{}",
        bad.len(),
        stdout.lines().count(),
        bad.iter().take(3).copied().collect::<Vec<_>>().join("\n")
    );
}

/// Log lines are batched (`log.flush_interval`): a request's line reaches stdout within the
/// interval while payshim runs, and a line still waiting when SIGTERM comes is written at
/// exit, not lost.
#[tokio::test]
async fn batched_log_lines_arrive_within_the_interval_and_at_exit() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let base = base_config(&pki, &upstream.url(), &dir.path().join("audit"));
    let base = set_key(&base, "log", "level", Some("\"info\""));
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let request_line = |stdout: &Path, id: &str| {
        std::fs::read_to_string(stdout)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"message\":\"request\"") && l.contains(id))
    };
    let unknown_route = |binary: &Binary| {
        Request::get(binary.url("/v2/not-a-route"))
            .body(Bytes::new())
            .unwrap()
    };

    // Short interval: the line shows up while payshim keeps running.
    let config = set_key(&base, "log", "flush_interval", Some("\"200ms\""));
    let mut binary = Binary::start(dir.path(), "interval", &config).await;
    let resp = client.send(unknown_route(&binary)).await.unwrap();
    assert_eq!(resp.status, 404);
    let id = resp.header("x-request-id").expect("request id");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !request_line(&binary.stdout, &id) {
        assert!(
            Instant::now() < deadline,
            "request line not written within 5 s:\n{}",
            binary.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    binary.stop().await;

    // Long interval: nothing written yet, then everything at exit.
    let config = set_key(&base, "log", "flush_interval", Some("\"10s\""));
    let mut binary = Binary::start(dir.path(), "at-exit", &config).await;
    let resp = client.send(unknown_route(&binary)).await.unwrap();
    let id = resp.header("x-request-id").expect("request id");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !request_line(&binary.stdout, &id),
        "with a 10 s interval the line must still be waiting"
    );
    binary.stop().await;
    assert!(
        request_line(&binary.stdout, &id),
        "the waiting line was not written at exit:\n{}",
        binary.output()
    );
}

/// The request log line (issue 2) and the payment log line (issue 3) carry what an operator
/// needs: request id, client, route, method, HTTP version, status, total and upstream latency, and for a
/// payment the order, brand, last four, method and outcome. No credential is ever logged:
/// neither the storefront key nor the store's upstream token. In sandbox mode every line
/// says `"sandbox":true`.
#[tokio::test]
async fn log_lines_carry_the_request_and_payment_fields_and_no_credential() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = base_config(&pki, &upstream.url(), &dir.path().join("audit"));
    let config = set_key(&config, "log", "level", Some("\"trace\""));
    let mut binary = Binary::start(dir.path(), "fields", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let year = (utc_year_month().0 + 3).to_string();
    let number = pan(BRANDS[0], 4242);
    let body = json!({ "data": card_data("Lovelace", &number, "7", &year, "737") });
    let payment = |binary: &Binary| {
        Request::post(binary.url(&payment_path(ORDER_OK)))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
            .body(Bytes::from(body.to_string()))
            .unwrap()
    };
    let paid = client.send(payment(&binary)).await.unwrap();
    assert_eq!(paid.status, 201, "{}", paid.text());
    let not_found = || {
        Request::get(binary.url("/v2/not-a-route"))
            .body(Bytes::new())
            .unwrap()
    };
    let missing = client.send(not_found()).await.unwrap();
    assert_eq!(missing.status, 404);
    let h2 = TestClient::new(&pki.ca_pem, HttpVersion::Http2)
        .send(not_found())
        .await
        .unwrap();
    assert_eq!(h2.status, 404);
    binary.stop().await;

    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    let stderr = std::fs::read_to_string(&binary.stderr).unwrap();
    for secret in [STOREFRONT_KEY, UPSTREAM_TOKEN] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a credential reached the log"
        );
    }
    let line = |id: &str| -> Value {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "request" && v["request_id"] == id)
            .unwrap_or_else(|| panic!("no request line for {id}:\n{stdout}"))
    };
    let pay = line(&paid.header("x-request-id").unwrap());
    for (key, want) in [
        ("client", json!("web-eu")),
        ("route", json!("payments")),
        ("method", json!("POST")),
        ("http", json!("1.1")),
        ("status", json!(201)),
        ("order_id", json!(ORDER_OK)),
        ("brand", json!(BRANDS[0].name)),
        ("last4", json!(&number[number.len() - 4..])),
        ("payment_method", json!("purchase")),
        ("outcome", json!("approved")),
        ("upstream_status", json!(201)),
    ] {
        assert_eq!(pay[key], want, "{key} in {pay}");
    }
    for key in ["total_us", "upstream_us"] {
        assert!(pay[key].is_u64(), "{key} in {pay}");
    }
    assert!(pay.get("sandbox").is_none(), "not a sandbox: {pay}");
    let over_h2 = line(&h2.header("x-request-id").unwrap());
    assert_eq!(over_h2["http"], "2", "{over_h2}");
    let miss = line(&missing.header("x-request-id").unwrap());
    assert_eq!(miss["http"], "1.1", "{miss}");
    assert_eq!(miss["route"], "not_found", "{miss}");
    assert_eq!(miss["status"], 404, "{miss}");
    assert!(
        miss.get("client").is_none() && miss.get("upstream_us").is_none(),
        "{miss}"
    );

    // The same binary as a sandbox: every line is marked.
    let sandbox = base_config(&pki, "sandbox", &dir.path().join("audit-sandbox"));
    let sandbox = set_key(&sandbox, "log", "level", Some("\"info\""));
    let mut binary = Binary::start(dir.path(), "sandbox", &sandbox).await;
    let resp = client.send(payment(&binary)).await.unwrap();
    // The sandbox answers as today's API does: 200.
    assert_eq!(resp.status, 200, "{}", resp.text());
    binary.stop().await;
    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    assert!(stdout.lines().count() >= 2, "{stdout}");
    for l in stdout.lines() {
        let v: Value = serde_json::from_str(l).expect(l);
        assert_eq!(v["sandbox"], true, "unmarked sandbox line: {l}");
    }
}
