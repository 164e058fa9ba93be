//! End to end with the real official SDKs (issues 4, 15 and 18): `@moltin/sdk` 36.0.0 and
//! `@elasticpath/js-sdk` 35.0.0 (pinned by tests/sdk/package-lock.json) pay through payshim
//! exactly as their documentation shows, `gateway({ client_id, host })` then
//! `Orders.Payment(orderId, {...})`, with only `host` changed and the test CA trusted
//! through `NODE_EXTRA_CA_CERTS` (tests/sdk/pay.mjs).
//!
//! Both SDKs: the token exchange, a card_connect payment, a Stripe token payment, capture
//! and refund. The SDK's own resends (after a 401 with a new token, after a 429 up to 4
//! attempts in all, `attempt * 1 s + up to 0.5 s` apart: `fetchRetry` in the SDK's
//! `src/factories/request.js`) still charge once.
//!
//! Needs node and npm (never skipped: the test fails with a message if they are missing).
//! It runs `npm ci` in tests/sdk when a pinned package is missing (support/node.rs).

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use support::node::{Sdk, ensure_packages, require_tool, sdk_dir};
use support::payshim::{
    ORDER, Payshim, SESSION_KEY, UPSTREAM_TOKEN, base_config, set_key, toml_str,
};
use support::upstream::transaction;
use support::{Handler, Recorded, Reply, TestPki, Upstream, moltin_like};

const PUBLIC_ID: &str = "pk-sdk-e2e-6a5b4c3d2e1f";

/// The `sdk-request {json}` / `sdk-response {json}` trace lines pay.mjs writes to stderr.
fn traced(stderr: &str, prefix: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|j| serde_json::from_str(j).expect("trace line is JSON"))
        .collect()
}

/// What one run of pay.mjs against payshim produced.
struct SdkRun {
    /// node's stdout and stderr, for failure messages.
    report: String,
    /// The last JSON line on stdout: the SDK's result.
    result: Value,
    /// The requests the SDK made (pay.mjs's trace).
    sent: Vec<Value>,
    /// The status of each answer the SDK got, in order.
    statuses: Vec<u16>,
    /// `localhost:PORT` of payshim.
    host: String,
}

impl SdkRun {
    /// Each request as `METHOD /path`.
    fn calls(&self) -> Vec<String> {
        self.sent
            .iter()
            .map(|r| {
                let url = r["url"].as_str().unwrap_or_default();
                let path = url.split_once(&self.host).map_or(url, |(_, p)| p);
                format!("{} {path}", r["method"].as_str().unwrap_or_default())
            })
            .collect()
    }
}

/// A payshim config in front of `upstream` with the browser client `web-sdk`
/// (`PUBLIC_ID`, implicit grant), allowed `routes` (a TOML list).
fn sdk_config(
    pki: &TestPki,
    upstream: &Upstream,
    audit: &Path,
    session_key: &str,
    routes: &str,
) -> String {
    let mut toml = base_config(pki, &upstream.url(), audit);
    toml.push_str(&format!(
        r#"
[auth]
session_key = {key}

[[clients]]
id = "web-sdk"
public_id = "{PUBLIC_ID}"
routes = {routes}
"#,
        key = toml_str(session_key)
    ));
    toml
}

/// Installs the SDKs if needed, starts payshim on `toml`, runs pay.mjs with `sdk` and
/// `scenario`, only the host changed and the test CA trusted, in `workdir` (where the SDK
/// keeps its token between runs, in ./localStorage), and asserts node exited 0.
async fn run_sdk(pki: &TestPki, toml: &str, sdk: Sdk, scenario: &str, workdir: &Path) -> SdkRun {
    let node = require_tool("node").await;
    ensure_packages().await;
    let payshim = Payshim::start(toml).await;
    let host = format!("localhost:{}", payshim.addr.port());
    let run = Command::new("node")
        .arg(sdk_dir().join("pay.mjs"))
        .args([host.as_str(), PUBLIC_ID, ORDER, sdk.package(), scenario])
        .current_dir(workdir)
        .env("NODE_EXTRA_CA_CERTS", &pki.ca_path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("node pay.mjs finished within 90 s")
        .expect("run node");
    payshim.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!(
        "node {node}, {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        sdk.package()
    );
    assert!(
        out.status.success(),
        "pay.mjs failed: {}\n{report}",
        out.status
    );
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result on stdout\n{report}"));
    let statuses = traced(&stderr, "sdk-response ")
        .iter()
        .map(|r| r["status"].as_u64().expect("status") as u16)
        .collect();
    SdkRun {
        sent: traced(&stderr, "sdk-request "),
        statuses,
        report,
        result,
        host,
    }
}

/// `run_sdk` for one card_connect purchase (scenario `pay`) by a client that may only
/// pay, in a fresh scratch directory.
async fn pay_with_sdk(pki: &TestPki, upstream: &Upstream, audit: &Path, sdk: Sdk) -> SdkRun {
    let scratch = tempfile::tempdir().unwrap();
    let toml = sdk_config(pki, upstream, audit, SESSION_KEY, r#"["payments"]"#);
    run_sdk(pki, &toml, sdk, "pay", scratch.path()).await
}

/// `METHOD path` of every request the upstream received.
fn upstream_calls(upstream: &Upstream) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// One purchase with `sdk`: what the SDK sent, and that the upstream got exactly the
/// payment, with the store's token and the canonical body.
async fn sdk_pays_through_payshim(sdk: Sdk) {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let audit = tempfile::tempdir().unwrap();
    let run = pay_with_sdk(&pki, &upstream, audit.path(), sdk).await;
    let SdkRun {
        report,
        result,
        sent,
        host,
        ..
    } = &run;

    // The SDK resolved with the transaction the upstream created.
    assert_eq!(result["data"]["type"], "transaction", "{report}");
    assert_eq!(result["data"]["gateway"], "card_connect");
    assert_eq!(result["data"]["transaction-type"], "purchase");
    assert_eq!(
        result["data"]["relationships"]["order"]["data"]["id"], ORDER,
        "{report}"
    );

    // What the SDK sent to payshim: its token exchange (implicit grant), then the payment
    // with payshim's session token.
    assert_eq!(sent.len(), 2, "SDK requests: {sent:#?}\n{report}");
    assert_eq!(sent[0]["method"], "POST");
    assert_eq!(sent[0]["url"], format!("https://{host}/oauth/access_token"));
    assert_eq!(sent[0]["grant_type"], "implicit");
    assert_eq!(
        sent[0]["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        sent[1]["url"],
        format!("https://{host}/v2/orders/{ORDER}/payments")
    );
    assert_eq!(sent[1]["method"], "POST");
    let auth = sent[1]["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        auth.starts_with("Bearer ps1."),
        "the SDK did not use payshim's session token: {auth}"
    );
    for request in sent {
        assert_eq!(request["headers"]["x-moltin-sdk-language"], "JS");
        assert_eq!(request["headers"]["x-moltin-sdk-version"], sdk.version());
    }
    assert_eq!(sent[1]["headers"]["x-moltin-application"], "epcc sdk");
    assert_eq!(sent[1]["headers"]["content-type"], "application/json");

    // What reached the upstream: exactly the payment, with the store's token and the
    // canonical card body, never the token exchange.
    let recorded = upstream.requests();
    assert_eq!(
        upstream_calls(&upstream),
        vec![format!("POST /v2/orders/{ORDER}/payments")],
        "{report}"
    );
    let req = &recorded[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
    for (name, value) in &req.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains("ps1."),
            "payshim's session token reached the upstream in {name}"
        );
    }
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        req.json(),
        json!({
            "data": {
                "gateway": "card_connect",
                "method": "purchase",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "number": "4111111111111111",
                "month": "12",
                "year": "2031",
                "verification_value": "123"
            }
        })
    );
    // The SDK's own headers travel on to the API.
    assert_eq!(req.header("x-moltin-sdk-language").as_deref(), Some("JS"));
    assert_eq!(
        req.header("x-moltin-sdk-version").as_deref(),
        Some(sdk.version())
    );
    assert_eq!(
        req.header("x-moltin-application").as_deref(),
        Some("epcc sdk")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moltin_sdk_pays_through_payshim() {
    sdk_pays_through_payshim(Sdk::Moltin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticpath_sdk_pays_through_payshim() {
    sdk_pays_through_payshim(Sdk::ElasticPath).await;
}

/// The SDK keeps its token between runs. A token from another deployment (another
/// session key) is refused with 401 before anything goes upstream; the SDK then fetches a
/// new token and resends, and the store is charged exactly once.
async fn sdk_resends_after_payshims_401(sdk: Sdk) {
    const OTHER_SESSION_KEY: &str = "other-session-key-sdk-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let audit = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let routes = r#"["payments"]"#;
    let old = sdk_config(&pki, &upstream, audit.path(), OTHER_SESSION_KEY, routes);
    let first = run_sdk(&pki, &old, sdk, "pay", workdir.path()).await;
    assert_eq!(first.sent.len(), 2, "{}", first.report);
    assert_eq!(upstream.count(), 1);

    let current = sdk_config(&pki, &upstream, audit.path(), SESSION_KEY, routes);
    let second = run_sdk(&pki, &current, sdk, "pay", workdir.path()).await;
    let report = &second.report;
    let payment = format!("POST /v2/orders/{ORDER}/payments");
    assert_eq!(
        second.calls(),
        vec![
            payment.clone(),
            "POST /oauth/access_token".to_string(),
            payment.clone()
        ],
        "stored token, 401, new token, resend\n{report}"
    );
    assert_eq!(second.statuses, vec![401, 200, 201], "{report}");
    assert_eq!(second.result["data"]["type"], "transaction", "{report}");
    // One payment upstream per run: the refused attempt never left payshim.
    assert_eq!(
        upstream_calls(&upstream),
        vec![payment.clone(), payment],
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moltin_sdk_resends_after_payshims_401_and_the_payment_is_made_once() {
    sdk_resends_after_payshims_401(Sdk::Moltin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticpath_sdk_resends_after_payshims_401_and_the_payment_is_made_once() {
    sdk_resends_after_payshims_401(Sdk::ElasticPath).await;
}

/// Answers like the API for what the SDK flow sends: payments (a transaction of the
/// body's gateway and method), capture and refund (the transaction of that action);
/// everything else as `moltin_like`.
fn sdk_flow_upstream() -> Handler {
    let fallback = moltin_like();
    support::handler(move |req: &Recorded| {
        let path = req.path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["v2", "orders", order, "payments"]) => {
                let body = req.json();
                let mut tx = transaction(order, body["data"]["method"].as_str().unwrap_or("x"));
                tx["gateway"] = body["data"]["gateway"].clone();
                Reply::json(201, json!({ "data": tx }))
            }
            ("POST", ["v2", "orders", order, "transactions", id, action]) => {
                let mut tx = transaction(order, action);
                tx["id"] = json!(id);
                Reply::json(200, json!({ "data": tx }))
            }
            _ => fallback(req),
        }
    })
}

/// Token exchange, card payment (authorize), capture, refund and a Stripe token payment,
/// each reaching the upstream once, in order, with the store token.
async fn sdk_payment_flow(sdk: Sdk) {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, sdk_flow_upstream()).await;
    let audit = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut toml = sdk_config(
        &pki,
        &upstream,
        audit.path(),
        SESSION_KEY,
        r#"["payments", "capture", "refund"]"#,
    );
    toml.push_str("\n[payments]\ngateways = [\"card_connect\", \"stripe\"]\n");
    let run = run_sdk(&pki, &toml, sdk, "flow", scratch.path()).await;
    let (r, report) = (&run.result, &run.report);
    for step in ["card", "capture", "refund"] {
        assert_eq!(
            r[step]["ok"], true,
            "step {step} failed: {}\n{report}",
            r[step]
        );
    }
    let tx = r["card"]["result"]["data"]["id"]
        .as_str()
        .expect("transaction id");
    assert_eq!(r["card"]["result"]["data"]["transaction-type"], "authorize");
    assert_eq!(r["capture"]["result"]["data"]["id"], tx);
    assert_eq!(r["refund"]["result"]["data"]["transaction-type"], "refund");
    assert_eq!(
        run.calls()[0],
        "POST /oauth/access_token",
        "the flow starts with the implicit grant\n{report}"
    );
    let recorded = upstream.requests();
    for req in &recorded {
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {UPSTREAM_TOKEN}"))
        );
    }
    let payments = format!("POST /v2/orders/{ORDER}/payments");
    let action = |a: &str| format!("POST /v2/orders/{ORDER}/transactions/{tx}/{a}");
    let calls = upstream_calls(&upstream);
    assert_eq!(
        calls[..3],
        [payments.clone(), action("capture"), action("refund")],
        "{report}"
    );
    // The SDK sends capture without a body, and the refund amount under `data`.
    assert!(recorded[1].body.is_empty(), "{report}");
    assert_eq!(recorded[2].json(), json!({ "data": { "amount": 4999 } }));

    // The Stripe token payment (needs the per-gateway validation of issue 18, item 1).
    assert_eq!(
        r["stripe"]["ok"], true,
        "stripe payment failed: {}\n{report}",
        r["stripe"]
    );
    assert_eq!(r["stripe"]["result"]["data"]["gateway"], "stripe");
    assert_eq!(calls.len(), 4, "{report}");
    assert_eq!(calls[3], payments);
    assert_eq!(
        recorded[3].json(),
        json!({ "data": {
            "gateway": "stripe",
            "method": "purchase",
            "payment": "tok_visa",
            "options": { "receipt_email": "ada@example.com" }
        }})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moltin_sdk_payment_flow_through_payshim() {
    sdk_payment_flow(Sdk::Moltin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticpath_sdk_payment_flow_through_payshim() {
    sdk_payment_flow(Sdk::ElasticPath).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_resend_after_an_upstream_429_charges_once() {
    // The API refuses the first payment with 429 (rate limited: nothing processed); the
    // SDK resends it after a second or so. payshim passes the 429 on, and its duplicate
    // window (on, as by default) must not take the 429 for an approved payment: the
    // resend is forwarded and charged, once.
    let pki = TestPki::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let seen = answered.clone();
    let fallback = moltin_like();
    let upstream = Upstream::start(
        &pki,
        support::handler(move |req| {
            if req.path.ends_with("/payments") && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::json(
                    429,
                    json!({ "errors": [{ "status": 429, "title": "Too Many Requests" }] }),
                );
            }
            fallback(req)
        }),
    )
    .await;
    let audit = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let toml = sdk_config(
        &pki,
        &upstream,
        audit.path(),
        SESSION_KEY,
        r#"["payments"]"#,
    );
    let toml = set_key(&toml, "idempotency", "duplicate_window", Some("\"10min\""));
    let toml = set_key(&toml, "idempotency", "one_payment_per_order", Some("true"));
    let run = run_sdk(&pki, &toml, Sdk::ElasticPath, "pay", scratch.path()).await;
    let report = &run.report;
    assert_eq!(run.result["data"]["type"], "transaction", "{report}");
    let payment = format!("POST /v2/orders/{ORDER}/payments");
    assert_eq!(
        run.calls(),
        vec![
            "POST /oauth/access_token".to_string(),
            payment.clone(),
            payment.clone()
        ],
        "{report}"
    );
    assert_eq!(run.statuses, vec![200, 429, 201], "{report}");
    // Two attempts reached the upstream, the refused one and the charged one; the same
    // canonical body both times.
    let recorded = upstream.requests();
    assert_eq!(
        upstream_calls(&upstream),
        vec![payment.clone(), payment],
        "{report}"
    );
    assert_eq!(recorded[0].body, recorded[1].body);
    assert_eq!(
        answered.load(Ordering::SeqCst),
        2,
        "exactly one 201 after one 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_resends_after_payshims_own_429_never_reach_the_upstream() {
    // payshim's per-order limit (1 payment per order per 10 minutes) refuses a second
    // payment for the order with 429 before forwarding it. The SDK resends it up to its
    // limit (4 attempts in all); none of them is forwarded.
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let audit = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let toml = sdk_config(
        &pki,
        &upstream,
        audit.path(),
        SESSION_KEY,
        r#"["payments"]"#,
    );
    let toml = set_key(&toml, "limits", "per_order", Some("\"1/10min\""));
    let run = run_sdk(&pki, &toml, Sdk::ElasticPath, "twice", scratch.path()).await;
    let (r, report) = (&run.result, &run.report);
    assert_eq!(r["first"]["ok"], true, "{report}");
    assert_eq!(r["second"]["ok"], false, "{report}");
    assert_eq!(r["second"]["error"]["errors"][0]["status"], 429, "{report}");
    let payment = format!("POST /v2/orders/{ORDER}/payments");
    let mut expected = vec!["POST /oauth/access_token".to_string()];
    expected.extend(std::iter::repeat_n(payment.clone(), 5));
    assert_eq!(
        run.calls(),
        expected,
        "one payment, then 4 attempts of the second\n{report}"
    );
    assert_eq!(run.statuses, vec![200, 201, 429, 429, 429, 429], "{report}");
    assert_eq!(upstream_calls(&upstream), vec![payment], "{report}");
    let forwarded = upstream.requests()[0].json();
    assert_eq!(forwarded["data"]["number"], "4111111111111111");
}

/// CRC-32 (IEEE), for the gzip trailer.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `data` as a valid gzip stream (one stored deflate block; `data` under 64 KiB).
fn gzip(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("under 64 KiB");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(0x01); // final block, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The audit records of `event`, waiting (at most 5 s) until there are `n`.
async fn audit_records(dir: &Path, event: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(dir.join("payshim.jsonl")).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["event"] == event)
            .collect();
        if records.len() >= n || std::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_payment_with_a_compressing_upstream_is_audited_with_its_transaction() {
    // Under Node the SDK asks for compressed answers (`accept-encoding: br, gzip, deflate`),
    // and the real API (like most HTTP servers) honours that when asked. payshim must still
    // be able to read the answer it audits: the transaction id and a decline.
    const DECLINED_ID: &str = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let pki = TestPki::new();
    let upstream = Upstream::start(
        &pki,
        support::handler(|req| {
            let body = json!({ "data": {
                "id": DECLINED_ID,
                "type": "transaction",
                "gateway": "card_connect",
                "transaction-type": "purchase",
                "status": "failed",
                "amount": 4999,
                "currency": "USD",
                "relationships": { "order": { "data": { "type": "order", "id": ORDER } } }
            }})
            .to_string();
            let gzip_ok = req
                .header("accept-encoding")
                .is_some_and(|v| v.contains("gzip"));
            let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
            let body = if gzip_ok {
                headers.push(("content-encoding".into(), "gzip".into()));
                gzip(body.as_bytes())
            } else {
                body.into_bytes()
            };
            support::Reply::Respond {
                status: 201,
                headers,
                body,
            }
        }),
    )
    .await;
    let audit = tempfile::tempdir().unwrap();
    let run = pay_with_sdk(&pki, &upstream, audit.path(), Sdk::Moltin).await;
    // The SDK itself decodes the answer either way.
    assert_eq!(run.result["data"]["id"], DECLINED_ID, "{}", run.report);
    assert_eq!(upstream.count(), 1);
    let completed = audit_records(audit.path(), "payment.completed", 1).await;
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(
        completed[0]["transaction_id"], DECLINED_ID,
        "the audit record lacks the transaction: {}",
        completed[0]
    );
    assert_eq!(
        completed[0]["outcome"], "declined",
        "a declined payment audited as {}",
        completed[0]["outcome"]
    );
}
