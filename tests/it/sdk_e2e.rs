//! End to end with the real official SDKs (issues 4, 15 and 18): `@moltin/sdk` 36.0.0 and
//! `@elasticpath/js-sdk` 35.0.0 (pinned by tests/sdk/package-lock.json) pay through payshim
//! exactly as their documentation shows, `gateway({ client_id, host })` then
//! `Orders.Payment(orderId, {...})`, with only `host` changed and the test CA trusted
//! through `NODE_EXTRA_CA_CERTS` (tests/sdk/pay.mjs).
//!
//! Both SDKs: the token exchange, a card_connect payment, a Stripe token payment, capture
//! and refund; the SDK's resend after payshim's 401 (with a new token) charges once. Its
//! resends after a 429: sdk_retry.rs. The runner: support/sdk_run.rs.
//!
//! Needs node and npm (never skipped: the test fails with a message if they are missing).
//! It runs `npm ci` in tests/sdk when a pinned package is missing (support/node.rs).

use crate::support;

use std::path::Path;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use support::node::Sdk;
use support::payshim::{ORDER, SESSION_KEY, UPSTREAM_TOKEN};
use support::sdk_run::{SdkRun, pay_with_sdk, run_sdk, sdk_config, upstream_calls};
use support::upstream::transaction;
use support::{Handler, Recorded, Reply, TestPki, Upstream, moltin_like};

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
        let text = payshim::audit::read_records(&dir.join("payshim.jsonl")).unwrap_or_default();
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
