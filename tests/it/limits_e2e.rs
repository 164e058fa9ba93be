//! Abuse protection through the real server (issue 5): every quota kind,
//! the card-cracking cap and the decline breaker end to end (429 in the API error format with
//! `Retry-After`, nothing forwarded, audited as `payment.rejected` with the scope as reason);
//! two payshim processes sharing one real Redis; Redis outages in `deny` and `local` mode;
//! memory of a real payshim process while thousands of distinct cards go through it.
//!
//! The limiter alone is tested in `src/limit/` and `limits_redis`; here it is the
//! server's wiring that is under test. Needs `redis-server` on PATH (Debian package
//! `redis-server`); the Redis tests fail, never skip, without it.

use crate::support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};

use support::cards::{BRANDS, Binary, MASTERCARD, VISA, pan};
use support::load::{
    LocalClient, audit_records, card_payment, future_year, payment_to, vm_rss_kib, wait_rejected,
};
use support::payshim::{
    ORDER, Payshim, SESSION_KEY, STOREFRONT_KEY, admin_get, base_config, set_key, sha256_hex,
    toml_str,
};
use support::redis::RedisServer;
use support::upstream::random_uuid;
use support::{
    Handler, HttpVersion, Recorded, Reply, TestClient, TestPki, TestResponse, Upstream, World,
    handler, moltin_like,
};

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

// ---------------------------------------------------------------------------------------
// Each key kind.

/// One quota kind, tested the same way as the others (see `three_then_429`).
struct Quota {
    /// The `[limits]` key; every case allows 3 payments per `period`.
    kind: &'static str,
    value: &'static str,
    period: Duration,
    version: HttpVersion,
    /// The n-th payment sharing the key: (order, storefront key, body).
    same: fn(u64) -> (String, &'static str, String),
    /// What the shared payments have in common, for failure messages.
    shared: &'static str,
    /// A payment with another key, and what it stands for.
    other: fn() -> (String, &'static str, String),
    other_what: &'static str,
}

/// A quota of 3 per period on `q.kind`: three payments sharing the key are served, the
/// fourth is refused (429 with `Retry-After` of one emission interval, nothing forwarded),
/// one with another key is served. Returns the world, payshim, client and the refused
/// payment's order, for the checks of each kind.
async fn three_then_429(q: &Quota) -> (World, Payshim, TestClient, String) {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[(q.kind, q.value)])).await;
    let client = payshim.client(q.version);
    let base = payshim.url("");

    for n in 0..3 {
        let (order, bearer, body) = (q.same)(n);
        let resp = send(&client, payment_to(&base, &order, bearer, &body)).await;
        assert_served(&resp, &format!("payment {n} {}", q.shared));
    }
    let (order, bearer, body) = (q.same)(3);
    let resp = send(&client, payment_to(&base, &order, bearer, &body)).await;
    let retry = assert_rate_limited(&resp, q.kind, q.period);
    assert_emission_interval(retry, q.period, 3);
    assert_eq!(world.upstream.count(), 3, "nothing forwarded for the 429");

    let (other_order, other_bearer, other_body) = (q.other)();
    let resp = send(
        &client,
        payment_to(&base, &other_order, other_bearer, &other_body),
    )
    .await;
    assert_served(&resp, q.other_what);
    assert_eq!(world.upstream.count(), 4);
    (world, payshim, client, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_quota_is_per_storefront() {
    let (world, payshim, client, order) = three_then_429(&Quota {
        kind: "per_client",
        value: "\"3/h\"",
        period: HOUR,
        version: HttpVersion::Http1,
        same: |n| (random_uuid(), STOREFRONT_KEY, payment(VISA, n).1),
        shared: "of web-eu",
        // Another storefront has its own quota.
        other: || (random_uuid(), OTHER_KEY, payment(VISA, 4).1),
        other_what: "web-us",
    })
    .await;

    // web-eu stays limited.
    let resp = send(
        &client,
        payment_to(
            &payshim.url(""),
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(VISA, 5).1,
        ),
    )
    .await;
    assert_rate_limited(&resp, "per_client", HOUR);
    assert_eq!(world.upstream.count(), 4);

    let rejected = wait_rejected(&world.audit_path(), "per_client", 2).await;
    assert_rejection_record(&rejected[0], "web-eu", &order);
}

/// A session token of `web-browser` (implicit grant). It is fetched from 127.0.0.3: the
/// token exchange is IP-limited too, and the per-IP tests count payments only.
async fn browser_session(payshim: &Payshim) -> String {
    let token_client = LocalClient::new(&payshim.ca_pem, HttpVersion::Http1, [127, 0, 0, 3].into());
    let resp = token_client
        .send(
            Request::builder()
                .method(Method::POST)
                .uri(payshim.url("/oauth/access_token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Bytes::from(format!(
                    "grant_type=implicit&client_id={PUBLIC_ID}"
                )))
                .unwrap(),
        )
        .await
        .expect("token exchange");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_quota_applies_to_browser_sessions() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("per_ip", "\"3/h\"")])).await;
    let base = payshim.url("");
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let second: IpAddr = [127, 0, 0, 2].into();

    let session = browser_session(&payshim).await;

    let first = LocalClient::new(&payshim.ca_pem, HttpVersion::Http1, localhost);
    for n in 0..3 {
        let resp = first
            .send(payment_to(
                &base,
                &random_uuid(),
                &session,
                &payment(VISA, n).1,
            ))
            .await
            .unwrap();
        assert_served(&resp, &format!("browser payment {n} from 127.0.0.1"));
    }
    let order = random_uuid();
    let resp = first
        .send(payment_to(&base, &order, &session, &payment(VISA, 3).1))
        .await
        .unwrap();
    let retry = assert_rate_limited(&resp, "per_ip", HOUR);
    assert_emission_interval(retry, HOUR, 3);
    assert_eq!(world.upstream.count(), 3, "nothing forwarded for the 429");

    // Another address with the same session is served...
    let other = LocalClient::new(&payshim.ca_pem, HttpVersion::Http2, second);
    let resp = other
        .send(payment_to(
            &base,
            &random_uuid(),
            &session,
            &payment(VISA, 4).1,
        ))
        .await
        .unwrap();
    assert_served(&resp, "browser payment from 127.0.0.2");
    // ...and so is a server storefront (API key) from the limited address: only browser
    // callers are limited per IP.
    let resp = first
        .send(payment_to(
            &base,
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(VISA, 5).1,
        ))
        .await
        .unwrap();
    assert_served(&resp, "API-key payment from 127.0.0.1");
    assert_eq!(world.upstream.count(), 5);

    let rejected = wait_rejected(&world.audit_path(), "per_ip", 1).await;
    assert_eq!(rejected[0]["remote_addr"], "127.0.0.1", "{}", rejected[0]);
    assert_eq!(rejected[0]["order_id"], order.as_str(), "{}", rejected[0]);
}

/// A per-IP refusal of a caller whose session token is valid names its storefront in the
/// audit record, like every other limit's refusal does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_rejection_of_a_valid_session_names_the_storefront() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("per_ip", "\"1/h\"")])).await;
    let session = browser_session(&payshim).await;
    let client = LocalClient::new(&payshim.ca_pem, HttpVersion::Http1, [127, 0, 0, 1].into());
    let base = payshim.url("");
    let resp = client
        .send(payment_to(
            &base,
            &random_uuid(),
            &session,
            &payment(VISA, 1).1,
        ))
        .await
        .unwrap();
    assert_served(&resp, "first browser payment");
    let order = random_uuid();
    let resp = client
        .send(payment_to(&base, &order, &session, &payment(VISA, 2).1))
        .await
        .unwrap();
    assert_rate_limited(&resp, "per_ip", HOUR);
    let rejected = wait_rejected(&world.audit_path(), "per_ip", 1).await;
    assert_rejection_record(&rejected[0], "web-browser", &order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_order_quota() {
    let (world, _payshim, _client, order) = three_then_429(&Quota {
        kind: "per_order",
        value: "\"3/10min\"",
        period: Duration::from_secs(600),
        version: HttpVersion::Http2,
        same: |n| (ORDER.to_string(), STOREFRONT_KEY, payment(VISA, n).1),
        shared: "on the order",
        other: || (random_uuid(), STOREFRONT_KEY, payment(VISA, 4).1),
        other_what: "another order",
    })
    .await;
    assert_eq!(order, ORDER);

    let rejected = wait_rejected(&world.audit_path(), "per_order", 1).await;
    assert_rejection_record(&rejected[0], "web-eu", ORDER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_card_quota_across_orders() {
    let (world, _payshim, _client, order) = three_then_429(&Quota {
        kind: "per_card",
        value: "\"3/h\"",
        period: HOUR,
        version: HttpVersion::Http1,
        same: |_| (random_uuid(), STOREFRONT_KEY, payment(MASTERCARD, 1).1),
        shared: "with the card",
        // Another card (same storefront, same brand).
        other: || (random_uuid(), STOREFRONT_KEY, payment(MASTERCARD, 2).1),
        other_what: "another card",
    })
    .await;

    let (number, _) = payment(MASTERCARD, 1);
    let rejected = wait_rejected(&world.audit_path(), "per_card", 1).await;
    assert_rejection_record(&rejected[0], "web-eu", &order);
    assert_eq!(
        rejected[0]["card"]["last4"],
        &number[number.len() - 4..],
        "{}",
        rejected[0]
    );
    assert_eq!(
        rejected[0]["card"]["brand"], "mastercard",
        "{}",
        rejected[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_attempts_cap_distinct_expiry_and_cvv() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("card_attempts", "\"3/h\"")])).await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");
    let number = pan(VISA, 42);
    let year = future_year(3);
    let attempt = |month: &str, cvv: &str| card_payment(&number, month, &year, cvv);

    // Three distinct (expiry, CVV) combinations for one card number, each on its own order.
    for (month, cvv) in [("01", "601"), ("02", "602"), ("03", "603")] {
        let resp = send(
            &client,
            payment_to(&base, &random_uuid(), STOREFRONT_KEY, &attempt(month, cvv)),
        )
        .await;
        assert_served(&resp, &format!("attempt {month}/{cvv}"));
    }
    // A fourth is card cracking.
    let order = random_uuid();
    let resp = send(
        &client,
        payment_to(&base, &order, STOREFRONT_KEY, &attempt("04", "604")),
    )
    .await;
    let retry = assert_rate_limited(&resp, "card_attempts", HOUR);
    // Until the first attempt leaves the one-hour window.
    assert!(retry + 10 >= HOUR.as_secs(), "Retry-After {retry}");
    // A refused combination is not recorded: a fifth new one is refused as well.
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), STOREFRONT_KEY, &attempt("05", "605")),
    )
    .await;
    assert_rate_limited(&resp, "card_attempts", HOUR);
    assert_eq!(world.upstream.count(), 3, "nothing forwarded for the 429s");

    // Repeating a combination already tried (a customer's retry) is not a new attempt.
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), STOREFRONT_KEY, &attempt("02", "602")),
    )
    .await;
    assert_served(&resp, "repeated combination");
    // Another card number with the refused combination is served.
    let other = pan(VISA, 43);
    let resp = send(
        &client,
        payment_to(
            &base,
            &random_uuid(),
            STOREFRONT_KEY,
            &card_payment(&other, "04", &year, "604"),
        ),
    )
    .await;
    assert_served(&resp, "another card");
    assert_eq!(world.upstream.count(), 5);

    let rejected = wait_rejected(&world.audit_path(), "card_attempts", 2).await;
    assert_rejection_record(&rejected[0], "web-eu", &order);
    assert_eq!(
        rejected[0]["card"]["last4"],
        &number[number.len() - 4..],
        "{}",
        rejected[0]
    );
}

// ---------------------------------------------------------------------------------------
// Decline breaker.

/// Declines every Visa card (402 and 422 in turn, like CardConnect through the API) and
/// approves anything else as the API does.
fn declining_visa() -> Handler {
    let approve = moltin_like();
    let n = Arc::new(AtomicUsize::new(0));
    handler(move |req: &Recorded| {
        let number = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| v["data"]["number"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if req.method == Method::POST && number.starts_with('4') {
            let status = if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                402
            } else {
                422
            };
            Reply::json(
                status,
                json!({"errors": [{"status": status, "title": "Payment declined",
                    "detail": "The card was declined"}]}),
            )
        } else {
            approve(req)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_breaker_trips_per_storefront_and_recovers() {
    let world = World::new(declining_visa()).await;
    let payshim = Payshim::start(&world.config(&[
        ("decline_window", "5"),
        ("decline_ratio", "0.8"),
        ("decline_cooldown", "\"2s\""),
    ]))
    .await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");

    // Five declines in a row (distinct cards: a card-testing run).
    for n in 0..5 {
        let resp = send(
            &client,
            payment_to(&base, &random_uuid(), STOREFRONT_KEY, &payment(VISA, n).1),
        )
        .await;
        assert!(
            resp.status == 402 || resp.status == 422,
            "decline {n} passed through as is: {} {}",
            resp.status,
            resp.text()
        );
    }
    assert_eq!(world.upstream.count(), 5);
    // The breaker is open: even a good card is refused, and nothing is forwarded.
    let order = random_uuid();
    let tripped = Instant::now();
    let resp = send(
        &client,
        payment_to(&base, &order, STOREFRONT_KEY, &payment(MASTERCARD, 1).1),
    )
    .await;
    let retry = assert_rate_limited(&resp, "decline_breaker", Duration::from_secs(2));
    assert_eq!(world.upstream.count(), 5, "nothing forwarded while open");

    // Another storefront is unaffected (its own decline goes through to the upstream).
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), OTHER_KEY, &payment(VISA, 10).1),
    )
    .await;
    assert!(
        resp.status == 402 || resp.status == 422,
        "web-us: {} {}",
        resp.status,
        resp.text()
    );
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), OTHER_KEY, &payment(MASTERCARD, 2).1),
    )
    .await;
    assert_served(&resp, "web-us");
    assert_eq!(world.upstream.count(), 7);

    // After the cool-down (as Retry-After said) web-eu is served again.
    let wait = Duration::from_secs(retry).saturating_sub(tripped.elapsed());
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    let resp = send(
        &client,
        payment_to(
            &base,
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(MASTERCARD, 3).1,
        ),
    )
    .await;
    assert_served(&resp, "web-eu after the cool-down");
    assert_eq!(world.upstream.count(), 8);

    let rejected = wait_rejected(&world.audit_path(), "decline_breaker", 1).await;
    assert_eq!(rejected.len(), 1);
    assert_rejection_record(&rejected[0], "web-eu", &order);
    let records = audit_records(&world.audit_path());
    let declined = records
        .iter()
        .filter(|r| r["event"] == "payment.completed" && r["outcome"] == "declined")
        .count();
    assert_eq!(declined, 6, "the declines are audited as such");
}

// ---------------------------------------------------------------------------------------
// Shared through Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_quota_through_redis() {
    let redis = RedisServer::start();
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let redis_url = toml_str(&redis.url());
    let limits = [
        ("per_order", "\"4/10min\""),
        ("redis_url", redis_url.as_str()),
    ];
    let audit_a = dir.path().join("audit-a");
    let audit_b = dir.path().join("audit-b");
    let a = Binary::start(
        dir.path(),
        "a",
        &config_for(&pki, &upstream.url(), &audit_a, &limits),
    )
    .await;
    let b = Binary::start(
        dir.path(),
        "b",
        &config_for(&pki, &upstream.url(), &audit_b, &limits),
    )
    .await;
    wait_readyz(a.admin, 200).await;
    wait_readyz(b.admin, 200).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let (base_a, base_b) = (a.url(""), b.url(""));

    for (n, base) in [&base_a, &base_b, &base_a, &base_b].into_iter().enumerate() {
        let status = pay(
            &client,
            base,
            ORDER,
            STOREFRONT_KEY,
            &payment(VISA, n as u64).1,
        )
        .await;
        assert_eq!(status, 201, "payment {n}\n{}\n{}", a.output(), b.output());
    }
    let ten_min = Duration::from_secs(600);
    for (name, base) in [("A", &base_a), ("B", &base_b)] {
        let resp = send(
            &client,
            payment_to(base, ORDER, STOREFRONT_KEY, &payment(VISA, 9).1),
        )
        .await;
        let retry = assert_rate_limited(&resp, "per_order", ten_min);
        assert_emission_interval(retry, ten_min, 4);
        eprintln!("fifth payment through {name}: 429, Retry-After {retry} s");
    }
    assert_eq!(upstream.count(), 4, "exactly the quota was forwarded");
    // Another order is unaffected, through either.
    for base in [&base_a, &base_b] {
        let status = pay(
            &client,
            base,
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(VISA, 20).1,
        )
        .await;
        assert_eq!(status, 201);
    }
    assert_eq!(upstream.count(), 6);
    for audit in [&audit_a, &audit_b] {
        let rejected = wait_rejected(&audit.join("payshim.jsonl"), "per_order", 1).await;
        assert_rejection_record(&rejected[0], "web-eu", ORDER);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_then_recovers() {
    let mut redis = RedisServer::start();
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[
        ("per_order", "\"1000/s\""),
        ("redis_url", &toml_str(&redis.url())),
    ]))
    .await;
    wait_readyz(payshim.admin, 200).await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");
    let body = payment(VISA, 1).1;
    let resp = send(&client, payment_to(&base, ORDER, STOREFRONT_KEY, &body)).await;
    assert_served(&resp, "with Redis up");

    redis.stop();
    for _ in 0..3 {
        let resp = send(&client, payment_to(&base, ORDER, STOREFRONT_KEY, &body)).await;
        assert_eq!(resp.status, 503, "Redis down, deny mode: {}", resp.text());
        let json = resp.json();
        assert_eq!(json["errors"][0]["status"], 503, "{json}");
        assert!(
            json["errors"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("rate limit store")),
            "{json}"
        );
        assert!(resp.header("retry-after").is_none());
    }
    assert_eq!(
        world.upstream.count(),
        1,
        "nothing forwarded while Redis is down"
    );
    let (status, readyz) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{readyz}");
    assert!(readyz.contains("Redis"), "{readyz}");
    wait_rejected(&world.audit_path(), "not_ready", 3).await;

    redis.start_again();
    let back = Instant::now();
    loop {
        let resp = send(&client, payment_to(&base, ORDER, STOREFRONT_KEY, &body)).await;
        if resp.status == 201 {
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(
            back.elapsed() < RECOVERY,
            "payments still refused {RECOVERY:?} after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = back.elapsed();
    wait_readyz(payshim.admin, 200).await;
    eprintln!("payments served again {recovered:?} after Redis came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_in_local_mode_applies_local_limits() {
    let mut redis = RedisServer::start();
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[
        ("per_order", "\"2/h\""),
        ("redis_url", &toml_str(&redis.url())),
        ("on_store_error", "\"local\""),
    ]))
    .await;
    wait_readyz(payshim.admin, 200).await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");
    let order = random_uuid();

    redis.stop();
    // Served from local limits, which still apply.
    for n in 0..2 {
        let resp = send(
            &client,
            payment_to(&base, &order, STOREFRONT_KEY, &payment(VISA, n).1),
        )
        .await;
        assert_served(&resp, &format!("payment {n} with Redis down, local mode"));
    }
    let resp = send(
        &client,
        payment_to(&base, &order, STOREFRONT_KEY, &payment(VISA, 2).1),
    )
    .await;
    let retry = assert_rate_limited(&resp, "per_order", HOUR);
    assert_emission_interval(retry, HOUR, 2);
    assert_eq!(world.upstream.count(), 2);
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), STOREFRONT_KEY, &payment(VISA, 3).1),
    )
    .await;
    assert_served(&resp, "another order, local mode");
    // Payments are served, so the replica stays in the load balancer's rotation.
    let (status, readyz) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(
        status, 200,
        "/readyz in local mode with Redis down: {readyz}"
    );

    // Back on Redis (restarted empty): its state decides again, once reconnected.
    redis.start_again();
    let started = std::time::Instant::now();
    let mut card = 4;
    loop {
        let resp = send(
            &client,
            payment_to(&base, &order, STOREFRONT_KEY, &payment(VISA, card).1),
        )
        .await;
        if resp.status == 201 {
            break;
        }
        assert!(
            started.elapsed() < RECOVERY,
            "still refused {RECOVERY:?} after Redis came back: {}",
            resp.status
        );
        card += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_rejected(&world.audit_path(), "per_order", 1).await;
}

// ---------------------------------------------------------------------------------------
// Memory.

/// 3,000 payments with distinct cards and orders through a real payshim process with
/// `max_keys = 500`: the key caps engage (logged) and the process's resident memory grows
/// by less than 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_thousands_of_distinct_cards() {
    const WARM_UP: u64 = 300;
    const PAYMENTS: u64 = 3_000;
    const CONCURRENCY: usize = 48;
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(
        &pki,
        &upstream.url(),
        &dir.path().join("audit"),
        &[
            ("per_order", "\"5/10min\""),
            ("per_card", "\"5/h\""),
            ("card_attempts", "\"3/h\""),
            ("max_keys", "500"),
        ],
    );
    let binary = Binary::start(dir.path(), "memory", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    let base = binary.url("");

    let run = |from: u64, to: u64| {
        let next = Arc::new(AtomicUsize::new(from as usize));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (client, base, next) = (client.clone(), base.clone(), next.clone());
            tasks.spawn(async move {
                let mut failures = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst) as u64;
                    if n >= to {
                        return failures;
                    }
                    let brand = BRANDS[(n as usize) % BRANDS.len()];
                    let (_, body) = payment(brand, n);
                    let req = payment_to(&base, &random_uuid(), STOREFRONT_KEY, &body);
                    match client.send(req).await {
                        Ok(r) if r.status == 201 => {}
                        Ok(r) => failures.push(format!("#{n}: {} {}", r.status, r.text())),
                        Err(e) => failures.push(format!("#{n}: {e}")),
                    }
                }
            });
        }
        tasks
    };

    let mut warm = run(0, WARM_UP);
    while let Some(failures) = warm.join_next().await {
        let failures = failures.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    let before = vm_rss_kib(binary.pid());
    let started = Instant::now();
    let mut load = run(WARM_UP, WARM_UP + PAYMENTS);
    let mut failures = Vec::new();
    while let Some(f) = load.join_next().await {
        failures.extend(f.unwrap());
    }
    let took = started.elapsed();
    let after = vm_rss_kib(binary.pid());
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(upstream.count() as u64, WARM_UP + PAYMENTS);
    let growth = after.saturating_sub(before);
    eprintln!(
        "memory: {PAYMENTS} payments with distinct cards and orders in {took:?} \
         ({:.0}/s, HTTP/2, {CONCURRENCY} streams), max_keys 500: VmRSS {before} KiB -> \
         {after} KiB (+{growth} KiB)",
        PAYMENTS as f64 / took.as_secs_f64()
    );
    assert!(
        growth < 64 * 1024,
        "VmRSS grew by {growth} KiB (bound 64 MiB)\n{}",
        binary.output()
    );
    // The caps did engage through the server (3,300 distinct keys per kind > 500).
    let log = format!(
        "{}{}",
        std::fs::read_to_string(&binary.stdout).unwrap_or_default(),
        std::fs::read_to_string(&binary.stderr).unwrap_or_default()
    );
    for scope in ["per_card", "per_order", "card_attempts"] {
        assert!(
            log.lines()
                .any(|l| l.contains("key cap reached") && l.contains(scope)),
            "no key-cap warning for {scope} in the log:\n{}",
            binary.output()
        );
    }
}
