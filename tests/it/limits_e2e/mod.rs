//! Abuse protection through the real server (issue 5): every quota kind,
//! the card-cracking cap and the decline breaker end to end (429 in the API error format with
//! `Retry-After`, nothing forwarded, audited as `payment.rejected` with the scope as reason);
//! two payshim processes sharing one real Redis; Redis outages in `deny` and `local` mode;
//! memory of a real payshim process while thousands of distinct cards go through it.
//!
//! The limiter alone is tested in `src/limit/` and `limits_redis`; here it is the
//! server's wiring that is under test. Needs `redis-server` on PATH (Debian package
//! `redis-server`); the Redis tests fail, never skip, without it.
//!
//! Files: `quotas.rs` (each quota kind and the card-cracking cap), `decline_breaker.rs`,
//! `redis_store.rs` (shared through Redis, Redis outages), `memory.rs`.

mod decline_breaker;
mod memory;
mod quotas;
mod redis_store;

use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::Value;

use support::cards::pan;
use support::load::{card_payment, future_year, payment_to};
use support::payshim::{SESSION_KEY, admin_get, base_config, set_key, sha256_hex, toml_str};
use support::{TestClient, TestPki, TestResponse, World};

/// The second server storefront's API key (client `web-us`).
const OTHER_KEY: &str = "sf-web-us-test-key-2b7d9e4c1a0f5863";
/// The browser storefront's public client id (client `web-browser`, implicit grant).
const PUBLIC_ID: &str = "pk-browser-limits-6c2e8a1f";

const HOUR: Duration = Duration::from_secs(3600);
/// How long Redis recovery may take through the server (the probe runs every 500 ms).
const RECOVERY: Duration = Duration::from_secs(10);

/// What this file adds to `World` (a trait: other files add their own).
trait WorldExt {
    fn config(&self, limits: &[(&str, &str)]) -> String;
    fn audit_path(&self) -> PathBuf;
}

impl WorldExt for World {
    /// `base_config` (every limit off) with `limits` set in `[limits]` (TOML literals), plus
    /// a second API-key client `web-us`, a session key and a browser client `web-browser`.
    fn config(&self, limits: &[(&str, &str)]) -> String {
        config_for(&self.pki, &self.upstream.url(), self.audit.path(), limits)
    }

    fn audit_path(&self) -> PathBuf {
        self.audit.path().join("payshim.jsonl")
    }
}

fn config_for(
    pki: &TestPki,
    upstream_url: &str,
    audit_dir: &std::path::Path,
    limits: &[(&str, &str)],
) -> String {
    // Info level: `Binary::start` reads the bound addresses from the serving line.
    let mut toml = set_key(
        &base_config(pki, upstream_url, audit_dir),
        "log",
        "level",
        Some("\"info\""),
    );
    for (key, value) in limits {
        toml = set_key(&toml, "limits", key, Some(value));
    }
    toml.push_str(&format!(
        r#"
[auth]
session_key = {session_key}

[[clients]]
id = "web-us"
api_key_sha256 = "{other_hash}"

[[clients]]
id = "web-browser"
public_id = "{PUBLIC_ID}"
allowed_origins = ["https://shop.example"]
routes = ["payments"]
"#,
        session_key = toml_str(SESSION_KEY),
        other_hash = sha256_hex(OTHER_KEY),
    ));
    toml
}

/// A valid payment with card number `n` of `brand` (expiry 09/+2 years, a fixed CVV).
fn payment(brand: support::cards::BrandSpec, n: u64) -> (String, String) {
    let number = pan(brand, n);
    let cvv = if brand.cvv_len == 4 { "7373" } else { "737" };
    let body = card_payment(&number, "09", &future_year(2), cvv);
    (number, body)
}

/// Sends with a guard; panics if the request does not complete.
async fn send(client: &TestClient, req: Request<Bytes>) -> TestResponse {
    client
        .send(req)
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// A payment through `client` to `base`; its status.
async fn pay(client: &TestClient, base: &str, order: &str, bearer: &str, body: &str) -> u16 {
    let resp = send(client, payment_to(base, order, bearer, body)).await;
    resp.status
}

/// The payment was served: the upstream double's 201 came back.
#[track_caller]
fn assert_served(resp: &TestResponse, what: &str) {
    assert_eq!(resp.status, 201, "{what}: {}", resp.text());
}

/// payshim's 429: the API error format, the scope in the detail, `Retry-After` in whole
/// seconds in `1..=period`. Returns `Retry-After`.
#[track_caller]
fn assert_rate_limited(resp: &TestResponse, scope: &str, period: Duration) -> u64 {
    assert_eq!(resp.status, 429, "{scope}: {}", resp.text());
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let json = resp.json();
    let error = &json["errors"][0];
    assert_eq!(error["status"], 429, "{json}");
    assert_eq!(error["title"], "Too Many Requests", "{json}");
    assert!(
        error["detail"].as_str().is_some_and(|d| d.contains(scope)),
        "the detail names the limit {scope}: {json}"
    );
    let request_id = resp.header("x-request-id").expect("x-request-id");
    assert_eq!(error["request_id"], request_id.as_str(), "{json}");
    let retry_after = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("{scope}: 429 without Retry-After"));
    let secs: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("{scope}: Retry-After {retry_after:?} is not whole seconds"));
    assert!(
        secs >= 1 && secs <= period.as_secs(),
        "{scope}: Retry-After {secs} not in 1..={}",
        period.as_secs()
    );
    secs
}

/// `Retry-After` is the GCRA emission interval (`period / count`) less the few moments the
/// test took, rounded up to whole seconds.
#[track_caller]
fn assert_emission_interval(retry_after: u64, period: Duration, count: u32) {
    let interval = (period / count).as_secs();
    assert!(
        retry_after <= interval && retry_after + 10 >= interval,
        "Retry-After {retry_after} s, expected about one emission interval ({interval} s)"
    );
}

/// Waits until `/readyz` answers `want` (bounded by `RECOVERY`); returns how long it took.
async fn wait_readyz(admin: SocketAddr, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = admin_get(admin, "/readyz").await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < RECOVERY,
            "/readyz still {status} after {RECOVERY:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The audit records of a rejection carry the request's client, address and order.
#[track_caller]
fn assert_rejection_record(record: &Value, client_id: &str, order: &str) {
    assert_eq!(record["client_id"], client_id, "{record}");
    assert_eq!(record["order_id"], order, "{record}");
    assert_eq!(record["outcome"], "rejected", "{record}");
    assert_eq!(record["remote_addr"], "127.0.0.1", "{record}");
}
