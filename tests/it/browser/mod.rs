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
//!
//! The test is here, with what its parts share (the orders, cards and `Seen`);
//! `setup.rs` starts what the page talks to (the API double, payshim's config, the session
//! tokens seeded into the page), `chromium.rs` drives the browser (the plan's steps,
//! run.mjs), `checks.rs` checks what each step saw.

mod checks;
mod chromium;
mod setup;

use crate::support;

use serde_json::{Value, json};

use support::payshim::{Payshim, SESSION_KEY, admin_get};
use support::{Recorded, TestPki, Upstream, storefront};

use checks::{
    check_foreign_origin, check_payments_from_the_allowed_origin, check_reauthentication,
    check_refused_payments,
};
use chromium::{run_browser, steps};
use setup::{api, config, expired_token, stale_token};

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

/// What one browser run produced, for the checks (checks.rs).
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
