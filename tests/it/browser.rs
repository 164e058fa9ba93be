//! A real browser (issue 18, item 5): headless Chromium (Debian's `chromium`, driven by
//! playwright-core, tests/browser/run.mjs) opens a static storefront page
//! (tests/browser/storefront.html) served from its own loopback HTTPS origin, which loads
//! the official SDK's browser bundle from that origin and pays through payshim. What the
//! page's own code got is read back and checked here, with what the upstream double
//! received and payshim's metrics:
//! - CORS preflight and the implicit grant work from the allowed origin, over HTTP/2;
//! - a payment succeeds and the upstream receives the store's token, not the browser's;
//! - a page on an origin payshim does not allow cannot read an answer (fetch rejects with
//!   a TypeError), and nothing it sends reaches the upstream;
//! - a session token that expired (or was signed with a previous session key) but that the
//!   SDK still takes for valid: 401, the SDK fetches a new one and resends, one
//!   charge reaches the upstream;
//! - a refused payment hands the API's JSON error to the page's code: payshim's own for a
//!   card that fails the Luhn check, the API's as it answered for a declined card.
//!
//! Needs node, npm and /usr/bin/chromium (scripts/test.sh installs them); never skipped.

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use tokio::process::Command;

use support::node::{ensure_packages, require_tool};
use support::payshim::{
    Payshim, SESSION_KEY, UPSTREAM_TOKEN, admin_get, base_config, set_key, toml_str,
};
use support::{HttpVersion, Recorded, TestPki, Upstream, moltin_like, storefront};

const CHROMIUM: &str = "/usr/bin/chromium";
const PUBLIC_ID: &str = "pk-storefront-3e2d1c0b9a88";
/// The session key of an earlier deployment (tokens it signed are no longer valid).
const OLD_SESSION_KEY: &str = "old-session-key-browser-0a9b8c7d6e5f4a3b2c1d0e9f8a7b";

const PAY_ORDER: &str = "5a0e2c41-1b3d-4c5e-8f60-718293a4b501";
const MOLTIN_ORDER: &str = "5a0e2c41-1b3d-4c5e-8f60-718293a4b502";
const BAD_CARD_ORDER: &str = "5a0e2c41-1b3d-4c5e-8f60-718293a4b503";
const STALE_ORDER: &str = "5a0e2c41-1b3d-4c5e-8f60-718293a4b504";
const FOREIGN_ORDER: &str = "5a0e2c41-1b3d-4c5e-8f60-718293a4b505";
const EXPIRED_ORDER: &str = "5a0e2c41-1b3d-4c5e-8f60-718293a4b506";
const DECLINED_ORDER: &str = "5a0e2c41-1b3d-4c5e-8f60-718293a4b507";

/// A Visa test number, one that fails the Luhn check, and one the gateway declines.
const CARD: &str = "4111111111111111";
const BAD_CARD: &str = "4111111111111112";
const DECLINED_CARD: &str = "4000000000000002";

/// The API's answer to a declined card (its error format, the gateway's error in `meta`).
fn declined() -> Value {
    json!({ "errors": [{
        "status": 400,
        "title": "Payment gateway processing failed",
        "detail": "Your card was declined.",
        "meta": { "error": { "code": "card_declined" } }
    }]})
}

/// `moltin_like`, except that a payment for `DECLINED_ORDER` is declined.
fn api() -> support::Handler {
    let fallback = moltin_like();
    support::handler(move |req| {
        if req.path == format!("/v2/orders/{DECLINED_ORDER}/payments") {
            return support::Reply::json(400, declined());
        }
        fallback(req)
    })
}

fn require_chromium() {
    let out = std::process::Command::new(CHROMIUM)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{CHROMIUM} is required for the browser test ({e}); `apt-get install chromium` (scripts/test.sh does)")
        });
    assert!(out.status.success(), "{CHROMIUM} --version failed");
}

/// payshim for the storefront: the browser client `web-shop` (implicit grant) allowed
/// from `origin` only, signing session tokens with `session_key`.
fn config(
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
async fn stale_token(pki: &TestPki, upstream: &Upstream, audit: &Path, origin: &str) -> Value {
    token_exchange(&config(pki, upstream, audit, OLD_SESSION_KEY, origin)).await
}

/// A session token signed with the current key that has expired: issued with
/// `auth.session_ttl = "1s"`, then waited on until `serving` refuses it (401). Its
/// `expires` is moved an hour on, as a browser whose clock runs an hour behind the
/// server's sees it, so that the SDK still sends it.
async fn expired_token(
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

/// Runs tests/browser/run.mjs on `plan` and returns its results (step name to result).
async fn run_browser(plan: &Value) -> (Value, String) {
    let node = require_tool("node").await;
    ensure_packages().await;
    require_chromium();
    let scratch = tempfile::tempdir().unwrap();
    let plan_path = scratch.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/run.mjs");
    let run = Command::new("node")
        .arg(script)
        .arg(&plan_path)
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser run finished within 240 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!("node {node}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "run.mjs failed: {}\n{report}",
        out.status
    );
    let results = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result on stdout\n{report}"));
    (results, report)
}

/// What one browser run produced, for the checks below.
struct Seen {
    /// Each step's result from run.mjs: `page` (what the page's code got) and `network`.
    results: Value,
    /// node's output and the results, for failure messages.
    report: String,
    /// payshim's `localhost:PORT`.
    host: String,
    /// payshim's `/metrics` after the run.
    metrics: String,
    /// Every request the upstream double received.
    upstream: Vec<Recorded>,
}

impl Seen {
    fn page(&self, step: &str) -> &Value {
        &self.results[step]["page"]
    }

    /// The payments for `order` that reached the upstream.
    fn upstream_payments(&self, order: &str) -> Vec<&Recorded> {
        let path = format!("/v2/orders/{order}/payments");
        self.upstream.iter().filter(|r| r.path == path).collect()
    }

    /// `METHOD /path STATUS` of each request of a step as the browser's network layer saw
    /// it (run.mjs): its preflights (`Preflight`), or the page's own requests.
    fn network(&self, step: &str, preflights: bool) -> Vec<String> {
        self.results[step]["network"]
            .as_array()
            .expect("network")
            .iter()
            .filter(|r| (r["type"] == "Preflight") == preflights)
            .map(|r| {
                let url = r["url"].as_str().unwrap_or_default();
                let path = url.split_once(&self.host).map_or(url, |(_, p)| p);
                let method = r["method"].as_str().unwrap_or_default();
                format!("{method} {path} {}", r["status"])
            })
            .collect()
    }

    /// The value of one sample of payshim's `/metrics` (0 when absent).
    fn metric(&self, sample: &str) -> u64 {
        self.metrics
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

const TOKEN_GRANTED: &str = "POST /oauth/access_token 200";

/// The steps run.mjs runs, in order: `(name, page origin, SDK bundle, scenario, args)`.
fn steps(
    shop: &str,
    foreign: &str,
    args: impl Fn(&str, &str) -> Value,
    stale: Value,
    expired: Value,
) -> Value {
    let seeded = |order: &str, token: Value| {
        let mut a = args(order, CARD);
        a["stale"] = token;
        a["storageKey"] = json!("epCredentials");
        a
    };
    let steps = [
        ("pay", shop, "elasticpath", "pay", args(PAY_ORDER, CARD)),
        (
            "pay_moltin",
            shop,
            "moltin",
            "pay",
            args(MOLTIN_ORDER, CARD),
        ),
        (
            "bad_card",
            shop,
            "elasticpath",
            "pay",
            args(BAD_CARD_ORDER, BAD_CARD),
        ),
        (
            "declined",
            shop,
            "elasticpath",
            "pay",
            args(DECLINED_ORDER, DECLINED_CARD),
        ),
        (
            "stale",
            shop,
            "elasticpath",
            "staleToken",
            seeded(STALE_ORDER, stale),
        ),
        (
            "expired",
            shop,
            "elasticpath",
            "staleToken",
            seeded(EXPIRED_ORDER, expired),
        ),
        (
            "foreign",
            foreign,
            "elasticpath",
            "foreign",
            args(FOREIGN_ORDER, CARD),
        ),
    ];
    steps
        .into_iter()
        .map(|(name, origin, sdk, scenario, args)| {
            json!({
                "name": name,
                "page": format!("{origin}/storefront.html?sdk={sdk}"),
                "scenario": scenario,
                "args": args,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storefront_in_chromium_pays_through_payshim() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, api()).await;
    let shop = storefront::start(&pki).await;
    let foreign = storefront::start(&pki).await;
    let audit = tempfile::tempdir().unwrap();
    let shop_origin = shop.url();
    let stale = stale_token(&pki, &upstream, audit.path(), &shop_origin).await;
    let toml = config(&pki, &upstream, audit.path(), SESSION_KEY, &shop_origin);
    let payshim = Payshim::start(&toml).await;
    let expired = expired_token(&pki, &upstream, audit.path(), &shop_origin, &payshim).await;
    let host = format!("localhost:{}", payshim.addr.port());
    let args = |order: &str, number: &str| json!({ "host": host, "client_id": PUBLIC_ID, "order": order, "number": number });
    let plan = json!({
        "chromium": CHROMIUM,
        "ca": pki.ca_path,
        "origins": [format!("https://{host}"), shop_origin, foreign.url()],
        "watch": format!("https://{host}"),
        "steps": steps(&shop_origin, &foreign.url(), args, stale, expired),
    });
    let (results, report) = run_browser(&plan).await;
    let (_, metrics) = admin_get(payshim.admin, "/metrics").await;
    payshim.stop().await;
    let seen = Seen {
        report: format!("{report}\n--- results\n{results:#}"),
        results,
        host,
        metrics,
        upstream: upstream.requests(),
    };

    // The pages loaded the SDKs' browser bundles from the storefront's own origin.
    let loaded: Vec<String> = shop.requests().iter().map(|r| r.path.clone()).collect();
    for bundle in ["/sdk/elasticpath.js", "/sdk/moltin.js"] {
        assert!(loaded.iter().any(|p| p == bundle), "{loaded:?}");
    }
    assert!(
        foreign
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/storefront.html")),
        "the foreign page was not loaded"
    );
    check_payments_from_the_allowed_origin(&seen);
    check_refused_payments(&seen);
    check_reauthentication(&seen);
    check_foreign_origin(&seen);
}

/// From the allowed origin, with both SDKs: the implicit grant, then the payment, each
/// preflighted (the SDK sends its own X-MOLTIN-* headers; the browser caches a preflight
/// for payshim's max-age, so only the first step shows both) and readable by the page's
/// code, all over HTTP/2; the upstream got the store's token, never the browser's.
fn check_payments_from_the_allowed_origin(seen: &Seen) {
    let report = &seen.report;
    assert_eq!(
        seen.network("pay", true),
        vec![
            "OPTIONS /oauth/access_token 204".to_string(),
            format!("OPTIONS /v2/orders/{PAY_ORDER}/payments 204")
        ],
        "{report}"
    );
    for (step, order) in [("pay", PAY_ORDER), ("pay_moltin", MOLTIN_ORDER)] {
        let r = seen.page(step);
        assert_eq!(r["ok"], true, "{step}\n{report}");
        let data = &r["result"]["data"];
        assert_eq!(data["type"], "transaction", "{step}\n{report}");
        assert_eq!(data["relationships"]["order"]["data"]["id"], order);
        let payment = format!("POST /v2/orders/{order}/payments 201");
        assert_eq!(
            seen.network(step, false),
            vec![TOKEN_GRANTED.to_string(), payment],
            "{step}\n{report}"
        );
        for request in seen.results[step]["network"].as_array().expect("network") {
            assert_eq!(request["protocol"], "h2", "{step}: {request}\n{report}");
        }
        // The page itself saw both answers.
        let statuses: Vec<&Value> = r["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|e| &e["responseStatus"])
            .collect();
        assert_eq!(statuses, [&json!(200), &json!(201)], "{step}\n{report}");
        let forwarded = seen.upstream_payments(order);
        assert_eq!(forwarded.len(), 1, "{step}\n{report}");
        assert_eq!(
            forwarded[0].header("authorization"),
            Some(format!("Bearer {UPSTREAM_TOKEN}"))
        );
        for (name, value) in &forwarded[0].headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains("ps1."),
                "the browser's session token reached the upstream in {name}"
            );
        }
    }
    // payshim's side: it answered the preflights of the token exchange and the payments.
    for route in ["token", "payments"] {
        let sample = format!(
            "payshim_requests_total{{route=\"{route}\",method=\"OPTIONS\",status=\"204\"}}"
        );
        assert!(seen.metric(&sample) >= 1, "no {sample}\n{}", seen.metrics);
    }
}

/// A bad card: payshim's 400 in the API's format reaches the page's code, naming the
/// field, nothing upstream. A card the gateway declines: the API's own error, as it
/// answered.
fn check_refused_payments(seen: &Seen) {
    let report = &seen.report;
    let bad = seen.page("bad_card");
    assert_eq!(bad["ok"], false, "{report}");
    let error = &bad["error"]["errors"][0];
    assert_eq!(error["status"], 400, "{report}");
    assert_eq!(error["source"], "data.number", "{report}");
    assert!(
        error["title"].is_string() && error["request_id"].is_string(),
        "{error}"
    );
    assert!(
        !bad.to_string().contains(BAD_CARD),
        "the card number came back: {bad}"
    );
    assert!(seen.upstream_payments(BAD_CARD_ORDER).is_empty());

    let declined_page = seen.page("declined");
    assert_eq!(declined_page["ok"], false, "{report}");
    assert_eq!(declined_page["error"], declined(), "{report}");
    assert_eq!(seen.upstream_payments(DECLINED_ORDER).len(), 1, "{report}");
}

/// A token payshim no longer accepts (another deployment's key; expired) that the SDK
/// still takes for valid: 401, a new token, the resend; one charge.
fn check_reauthentication(seen: &Seen) {
    let report = &seen.report;
    for (step, order) in [("stale", STALE_ORDER), ("expired", EXPIRED_ORDER)] {
        assert_eq!(seen.page(step)["ok"], true, "{step}\n{report}");
        let payment = format!("POST /v2/orders/{order}/payments");
        assert_eq!(
            seen.network(step, false),
            vec![
                format!("{payment} 401"),
                TOKEN_GRANTED.to_string(),
                format!("{payment} 201")
            ],
            "{step}\n{report}"
        );
        assert_eq!(seen.upstream_payments(order).len(), 1, "{step}\n{report}");
    }
    let probes = format!("/v2/orders/{EXPIRED_ORDER}/transactions");
    assert!(seen.upstream.iter().all(|r| r.path != probes));
}

/// From an origin payshim does not allow, the page can read nothing: the browser's fetch
/// (a simple request, not preflighted) and the SDK both fail with a TypeError, the
/// browser naming the missing CORS grant, and no payment reaches the upstream.
fn check_foreign_origin(seen: &Seen) {
    let report = &seen.report;
    for part in ["simple", "payment"] {
        let r = &seen.page("foreign")[part];
        assert_eq!(r["ok"], false, "{part}\n{report}");
        assert_eq!(r["error"]["name"], "TypeError", "{part}\n{report}");
    }
    let cors_errors: Vec<&Value> = seen.results["foreign"]["network"]
        .as_array()
        .expect("network")
        .iter()
        .filter_map(|r| r.get("corsError"))
        .collect();
    assert_eq!(
        cors_errors,
        [
            &json!("MissingAllowOriginHeader"),
            &json!("PreflightMissingAllowOriginHeader")
        ],
        "{report}"
    );
    assert!(seen.upstream_payments(FOREIGN_ORDER).is_empty(), "{report}");
    // payshim did answer the simple request, with no CORS grant: the browser withheld it.
    let refused = "payshim_requests_total{route=\"token\",method=\"POST\",status=\"403\"}";
    assert!(seen.metric(refused) >= 1, "no {refused}\n{}", seen.metrics);
}
