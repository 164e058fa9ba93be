//! The series the alert rules read follow the faults they are about, through the real
//! binary (deploy/prometheus/payshim-rules.yml): the audit log failing between a payment's
//! `forwarded` and `completed` records (payments to reconcile, audit log, readiness), no
//! upstream token, and the rate-limit store unreachable.

use std::time::Duration;

use serde_json::json;

use crate::soak::process::Proc;
use crate::support::payshim::{ORDER, STOREFRONT_KEY, payment_body, set_key, toml_str};
use crate::support::{
    HttpVersion, Recorded, Reply, TestClient, World, closed_port, handler, moltin_like,
};

/// The value of the unlabelled sample `name` in the text format.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

fn assert_sample(text: &str, name: &str, want: f64) {
    assert_eq!(sample(text, name), Some(want), "{name} in\n{text}");
}

async fn start(dir: &std::path::Path, config: &str) -> Proc {
    let config = set_key(config, "log", "level", Some("\"info\""));
    Proc::start(dir, "signals", &config).await
}

/// The audit log becomes unwritable while a payment is at the API: the API's answer still
/// goes out, its `completed` record is lost and counted (PayshimPaymentsToReconcile), and
/// the audit and readiness gauges drop (PayshimAuditLogNotWritable, PayshimNotReady).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_completed_record_is_counted_and_readiness_drops() {
    let answer_after = Duration::from_secs(2);
    let inner = moltin_like();
    let world = World::new(handler(move |req: &Recorded| {
        let answer = inner(req);
        if req.path.ends_with("/payments") {
            answer.delayed(answer_after)
        } else {
            answer
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Room for the answer's delay on a loaded machine (the shared config says 2 s).
    let config = set_key(&world.base_config(), "upstream", "timeout", Some("\"20s\""));
    let payshim = start(dir.path(), &config).await;
    let before = payshim.metrics().await;
    for name in [
        "payshim_ready",
        "payshim_audit_healthy",
        "payshim_upstream_token_available",
        "payshim_limits_store_up",
    ] {
        assert_sample(&before, name, 1.0);
    }
    assert_sample(&before, "payshim_audit_completed_lost_total", 0.0);

    let client = TestClient::new(&world.pki.ca_pem, HttpVersion::Http1);
    let url = format!("{}/v2/orders/{ORDER}/payments", payshim.base_url());
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(bytes::Bytes::from(payment_body()))
        .expect("request");
    let paying = tokio::spawn(async move { client.send(request).await });
    // Once the API has the payment, its `forwarded` record is durable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while world.upstream.count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no payment reached the API\n{}",
            payshim.output()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    payshim.limit_file_size(Some(0));
    let answer = tokio::time::timeout(Duration::from_secs(30), paying)
        .await
        .expect("an answer within 30 s")
        .expect("join")
        .expect("the payment");
    let during = payshim.metrics().await;
    payshim.limit_file_size(None);
    assert_eq!(answer.status, 201, "the charge happened: {}", answer.text());
    assert_sample(&during, "payshim_audit_completed_lost_total", 1.0);
    assert_sample(&during, "payshim_audit_healthy", 0.0);
    assert_sample(&during, "payshim_ready", 0.0);
    let synced = sample(&during, "payshim_audit_durable_duration_seconds_count");
    assert!(
        synced >= Some(2.0),
        "forwarded and completed timed: {synced:?}\n{during}"
    );
    payshim.stop().await;
}

/// With client credentials the API refuses: no token (PayshimNoUpstreamToken), not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_token_is_a_gauge_at_zero() {
    let inner = moltin_like();
    let world = World::new(handler(move |req: &Recorded| {
        if req.path.starts_with("/oauth/") {
            Reply::json(
                401,
                json!({"errors": [{"status": 401, "title": "Unauthorized"}]}),
            )
        } else {
            inner(req)
        }
    }))
    .await;
    let config = set_key(&world.base_config(), "upstream.auth", "token", None);
    let config = set_key(
        &config,
        "upstream.auth",
        "client_id",
        Some(&toml_str("shop-client")),
    );
    let config = set_key(
        &config,
        "upstream.auth",
        "client_secret",
        Some(&toml_str("shop-client-secret-9f8e7d6c")),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let payshim = start(dir.path(), &config).await;
    let text = payshim.metrics().await;
    assert_sample(&text, "payshim_upstream_token_available", 0.0);
    assert_sample(&text, "payshim_ready", 0.0);
    assert_sample(&text, "payshim_audit_healthy", 1.0);
    payshim.stop().await;
}

/// Redis unreachable (PayshimLimitsStoreDown): the gauge is 0; with `deny` not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_limits_store_is_a_gauge_at_zero() {
    let world = World::new(moltin_like()).await;
    let closed = closed_port();
    let url = toml_str(&format!("redis://{}", closed.addr()));
    let config = set_key(&world.base_config(), "limits", "redis_url", Some(&url));
    let config = set_key(&config, "limits", "on_store_error", Some("\"deny\""));
    let dir = tempfile::tempdir().expect("temp dir");
    let payshim = start(dir.path(), &config).await;
    let text = payshim.metrics().await;
    assert_sample(&text, "payshim_limits_store_up", 0.0);
    assert_sample(&text, "payshim_ready", 0.0);
    assert_sample(&text, "payshim_upstream_token_available", 1.0);
    payshim.stop().await;
}
