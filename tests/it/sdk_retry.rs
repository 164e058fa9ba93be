//! The official SDK's own resends after a 429 still charge once (issue 15): the SDKs
//! resend any request, payments included, after a 429, up to 4 attempts in all,
//! `attempt * 1 s + up to 0.5 s` apart (`fetchRetry` in the SDK's
//! `src/factories/request.js`). Run with the real `@elasticpath/js-sdk` (tests/sdk/pay.mjs,
//! support/sdk_run.rs) against payshim and the upstream double.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use support::node::Sdk;
use support::payshim::{ORDER, SESSION_KEY, set_key};
use support::sdk_run::{run_sdk, sdk_config, upstream_calls};
use support::{Reply, TestPki, Upstream, moltin_like};

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
