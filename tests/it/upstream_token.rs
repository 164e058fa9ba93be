//! The managed upstream token (issue 4): with `upstream.auth.client_id` + `client_secret`,
//! payshim gets the store's token from `{upstream.url}/oauth/access_token`
//! (client_credentials), refreshes it at 80% of `expires_in` from one place (never one
//! token call per request), refreshes once and resends once after an upstream 401, answers
//! 503 and fails `/readyz` while no token can be had, and recovers when the endpoint does.
//! Its secrets and tokens never reach the log (checked on the real binary's output).
//!
//! The token double issues short-lived tokens (`expires_in` 2 s), so the whole file runs in
//! a few seconds.

use crate::support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use tempfile::TempDir;

use support::payshim::{
    AUDIT_KEY, ORDER, Payshim, SESSION_KEY, STOREFRONT_KEY, UPSTREAM_TOKEN, admin_get, base_config,
    payment_body, payment_request, set_key, sha256_hex, toml_str,
};
use support::upstream::transaction;
use support::{
    Handler, HttpVersion, Recorded, Reply, TestClient, TestPki, TestResponse, Upstream,
    closed_port, handler,
};

const CLIENT_ID: &str = "store-client-id-7c1d";
const CLIENT_SECRET: &str = "store-client-secret-e4a9b2c71f0d83ee";
const TOKEN_PATH: &str = "/oauth/access_token";

/// The upstream API double with a token endpoint whose behaviour each test steers.
struct Api {
    /// `expires_in` of every token issued.
    expires_in: u64,
    /// Tokens issued so far (`upstream-token-N`, N from 1).
    issued: AtomicUsize,
    /// While set, the token endpoint answers 503.
    down: AtomicBool,
    /// Payments presenting one of these tokens get 401.
    rejected: Mutex<Vec<String>>,
    /// Every payment gets 401.
    reject_all: AtomicBool,
    /// When set, every 401 is held until 500 ms after the first one arrived, so that
    /// concurrent requests all get theirs at once.
    batch_rejections: AtomicBool,
    first_rejection: Mutex<Option<Instant>>,
    /// When each token call arrived.
    token_times: Mutex<Vec<Instant>>,
    /// How long the token endpoint takes to answer, in ms (a slow identity service).
    token_delay_ms: AtomicU64,
}

impl Api {
    fn new(expires_in: u64) -> Arc<Api> {
        Arc::new(Api {
            expires_in,
            issued: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            rejected: Mutex::new(Vec::new()),
            reject_all: AtomicBool::new(false),
            batch_rejections: AtomicBool::new(false),
            first_rejection: Mutex::new(None),
            token_times: Mutex::new(Vec::new()),
            token_delay_ms: AtomicU64::new(0),
        })
    }

    fn handler(self: &Arc<Self>) -> Handler {
        let api = self.clone();
        handler(move |req: &Recorded| api.answer(req))
    }

    fn answer(&self, req: &Recorded) -> Reply {
        if req.path == TOKEN_PATH {
            let delay = Duration::from_millis(self.token_delay_ms.load(Ordering::SeqCst));
            return self.answer_token().delayed(delay);
        }
        self.answer_payment(req)
    }

    fn answer_token(&self) -> Reply {
        self.token_times.lock().unwrap().push(Instant::now());
        if self.down.load(Ordering::SeqCst) {
            return Reply::json(
                503,
                json!({"errors":[{"status":503,"title":"Service Unavailable"}]}),
            );
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::json(
            200,
            json!({
                "access_token": format!("upstream-token-{n}"),
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "identifier": "client_credentials",
            }),
        )
    }

    fn answer_payment(&self, req: &Recorded) -> Reply {
        let auth = req.header("authorization").unwrap_or_default();
        let token = auth.strip_prefix("Bearer ").unwrap_or_default();
        if self.reject_all.load(Ordering::SeqCst)
            || self.rejected.lock().unwrap().iter().any(|t| t == token)
        {
            let reply = Reply::json(
                401,
                json!({"errors":[{"status":401,"title":"Unauthorized","detail":"invalid token"}]}),
            );
            if !self.batch_rejections.load(Ordering::SeqCst) {
                return reply;
            }
            let until = *self
                .first_rejection
                .lock()
                .unwrap()
                .get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
            return reply.delayed(until.saturating_duration_since(Instant::now()));
        }
        Reply::json(201, json!({ "data": transaction(ORDER, "purchase") }))
    }
}

struct World {
    pki: TestPki,
    api: Arc<Api>,
    upstream: Upstream,
    audit: TempDir,
}

impl World {
    async fn new(expires_in: u64) -> World {
        let pki = TestPki::new();
        let api = Api::new(expires_in);
        let upstream = Upstream::start(&pki, api.handler()).await;
        World {
            pki,
            api,
            upstream,
            audit: tempfile::tempdir().expect("audit temp dir"),
        }
    }

    /// `base_config` with client credentials instead of the static upstream token.
    fn config(&self) -> String {
        managed_config(base_config(
            &self.pki,
            &self.upstream.url(),
            self.audit.path(),
        ))
    }

    fn token_calls(&self) -> usize {
        self.upstream
            .requests()
            .iter()
            .filter(|r| r.path == TOKEN_PATH)
            .count()
    }

    /// The `Authorization` of every payment the upstream received, in order.
    fn payment_tokens(&self) -> Vec<String> {
        self.upstream
            .requests()
            .iter()
            .filter(|r| r.path == format!("/v2/orders/{ORDER}/payments"))
            .map(|r| r.header("authorization").unwrap_or_default())
            .collect()
    }
}

fn managed_config(toml: String) -> String {
    let toml = set_key(&toml, "upstream.auth", "token", None);
    let toml = set_key(
        &toml,
        "upstream.auth",
        "client_id",
        Some(&toml_str(CLIENT_ID)),
    );
    set_key(
        &toml,
        "upstream.auth",
        "client_secret",
        Some(&toml_str(CLIENT_SECRET)),
    )
}

fn bearer(n: usize) -> String {
    format!("Bearer upstream-token-{n}")
}

async fn send(client: &TestClient, req: Request<Bytes>) -> TestResponse {
    tokio::time::timeout(Duration::from_secs(15), client.send(req))
        .await
        .expect("payshim answered within 15 s")
        .expect("request completes")
}

async fn pay(payshim: &Payshim, client: &TestClient) -> TestResponse {
    let key = format!("Bearer {STOREFRONT_KEY}");
    send(
        client,
        payment_request(payshim, &[("authorization", &key)], &payment_body()),
    )
    .await
}

/// `n` payments at once (one HTTP/2 connection, so they are truly concurrent); the
/// statuses in completion order.
async fn pay_concurrently(payshim: &Payshim, n: usize) -> Vec<u16> {
    let client = payshim.client(HttpVersion::Http2);
    let key = format!("Bearer {STOREFRONT_KEY}");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let client = client.clone();
        let req = payment_request(payshim, &[("authorization", &key)], &payment_body());
        set.spawn(async move { send(&client, req).await.status });
    }
    let mut statuses = Vec::with_capacity(n);
    while let Some(status) = set.join_next().await {
        statuses.push(status.expect("payment task"));
    }
    statuses
}

/// Polls `/readyz` until it answers `want` (at most `within`); panics with the last answer.
async fn wait_readyz(payshim: &Payshim, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = admin_get(payshim.admin, "/readyz").await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after {within:?} (wanted {want}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `cond` holds (at most `within`).
async fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_api_error(resp: &TestResponse, status: u16) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    assert_eq!(
        resp.json()["errors"][0]["status"],
        status,
        "{}",
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_call_for_many_requests_and_one_refresh_at_80_percent() {
    let world = World::new(2).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    assert_eq!(world.token_calls(), 1);

    // The token call itself: client_credentials, form-encoded, to {upstream.url}.
    let token_call = world.upstream.requests()[0].clone();
    assert_eq!(token_call.method, http::Method::POST);
    assert_eq!(token_call.path, TOKEN_PATH);
    assert_eq!(
        token_call.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let form: HashMap<String, String> = form_urlencoded::parse(&token_call.body)
        .into_owned()
        .collect();
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(form.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some(CLIENT_SECRET)
    );
    assert!(token_call.header("authorization").is_none());
    assert_eq!(
        token_call.header("host"),
        Some(format!("localhost:{}", world.upstream.addr().port())),
        "the token call names the API host"
    );

    // 50 concurrent payments: all served with token 1, no further token call.
    let statuses = pay_concurrently(&payshim, 50).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(world.token_calls(), 1, "token calls during the first burst");
    let used = world.payment_tokens();
    assert_eq!(used.len(), 50);
    assert!(used.iter().all(|t| *t == bearer(1)), "{used:?}");

    // One refresh at 80% of the 2 s lifetime, ahead of expiry.
    wait_until("the refresh", Duration::from_secs(4), || {
        world.token_calls() >= 2
    })
    .await;
    let times = world.api.token_times.lock().unwrap().clone();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(1400) && gap < Duration::from_millis(1950),
        "refresh {gap:?} after the first token (lifetime 2 s, expected ~1.6 s)"
    );

    // Another burst: the refreshed token, still no token call per request.
    let statuses = pay_concurrently(&payshim, 50).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let calls = world.token_calls();
    assert!(
        (2..=3).contains(&calls),
        "{calls} token calls for 100 requests in about 2 s"
    );
    let second: Vec<String> = world.payment_tokens()[50..].to_vec();
    assert_eq!(second.len(), 50);
    assert!(
        second.iter().all(|t| *t == bearer(2) || *t == bearer(3)),
        "{second:?}"
    );
    // Over the whole run: one token call per ~1.6 s, no matter how many requests.
    let lifetime_calls = world.token_calls();
    let elapsed = times[0].elapsed().as_secs_f64();
    assert!(
        lifetime_calls as f64 <= elapsed / 1.6 + 1.5,
        "{lifetime_calls} token calls in {elapsed:.1} s"
    );
    payshim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_at_start_up_wait_for_the_first_token() {
    // The token endpoint takes 1.5 s: payments sent as soon as /healthz answers arrive
    // while the first fetch is in flight, and must wait for it rather than get 503.
    let world = World::new(3600).await;
    world.api.token_delay_ms.store(1500, Ordering::SeqCst);
    let payshim = Payshim::start(&world.config()).await;
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "ready before the first token: {body}");
    assert!(body.contains("no upstream token"), "{body}");

    let statuses = pay_concurrently(&payshim, 6).await;
    assert_eq!(
        statuses,
        vec![201; 6],
        "payments sent during the first fetch"
    );
    assert_eq!(
        world.token_calls(),
        1,
        "the waiting payments shared one fetch"
    );
    assert_eq!(world.payment_tokens(), vec![bearer(1); 6]);
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    payshim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_at_start_up_get_503_once_a_slow_first_fetch_fails() {
    // Waiting is bounded by the fetch: when it fails, the waiting payments get 503.
    let world = World::new(3600).await;
    world.api.token_delay_ms.store(500, Ordering::SeqCst);
    world.api.down.store(true, Ordering::SeqCst);
    let payshim = Payshim::start(&world.config()).await;
    let started = Instant::now();
    let statuses = pay_concurrently(&payshim, 6).await;
    assert_eq!(statuses, vec![503; 6]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "payments waited {:?} for a token",
        started.elapsed()
    );
    assert!(world.token_calls() >= 1, "no token call");
    assert!(world.payment_tokens().is_empty(), "a payment went out");
    let (status, _) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503);
    payshim.stop().await;
}

#[tokio::test]
async fn an_upstream_401_causes_one_refresh_and_one_resend() {
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    // The store rotated its credentials: token 1 is now refused.
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.json()["data"]["type"], "transaction");
    assert_eq!(world.token_calls(), 2, "exactly one refresh");
    assert_eq!(
        world.payment_tokens(),
        vec![bearer(1), bearer(2)],
        "one send, one resend with the fresh token"
    );
    // Both sends carried the same canonical body.
    let payments: Vec<Recorded> = world
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/payments"))
        .collect();
    assert_eq!(payments[0].body, payments[1].body);
    // The next payment goes straight out with token 2.
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201);
    assert_eq!(world.payment_tokens().len(), 3);
    assert_eq!(world.token_calls(), 2);
    payshim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_share_one_refresh() {
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());
    // The 401s all come back together, so the refreshes they cause race.
    world.api.batch_rejections.store(true, Ordering::SeqCst);
    let statuses = pay_concurrently(&payshim, 50).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let used = world.payment_tokens();
    let with_1 = used.iter().filter(|t| **t == bearer(1)).count();
    let with_2 = used.iter().filter(|t| **t == bearer(2)).count();
    // The burst was concurrent: many requests were rejected at the same moment.
    assert!(with_1 >= 10, "only {with_1} concurrent 401s: {used:?}");
    assert_eq!(
        world.token_calls(),
        2,
        "{with_1} concurrent 401s must share one refresh"
    );
    // Every request ends with exactly one send of token 2, and at most one before it.
    assert_eq!(with_2, 50, "{used:?}");
    assert!(with_1 <= 50, "{used:?}");
    assert_eq!(used.len(), with_1 + with_2);
    payshim.stop().await;
}

#[tokio::test]
async fn repeated_401_is_a_502_after_exactly_one_resend() {
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    world.api.reject_all.store(true, Ordering::SeqCst);
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 502);
    assert_eq!(world.payment_tokens(), vec![bearer(1), bearer(2)]);
    assert_eq!(world.token_calls(), 2);
    payshim.stop().await;

    // With a static token there is nothing to refresh: one send, then 502.
    let world = World::new(3600).await;
    world.api.reject_all.store(true, Ordering::SeqCst);
    let payshim = Payshim::start(&base_config(
        &world.pki,
        &world.upstream.url(),
        world.audit.path(),
    ))
    .await;
    let resp = pay(&payshim, &payshim.client(HttpVersion::Http1)).await;
    assert_api_error(&resp, 502);
    assert_eq!(
        world.payment_tokens(),
        vec![format!("Bearer {UPSTREAM_TOKEN}")]
    );
    assert_eq!(world.token_calls(), 0);
    payshim.stop().await;
}

#[tokio::test]
async fn token_endpoint_down_at_start_gives_503_then_recovers() {
    let world = World::new(3600).await;
    world.api.down.store(true, Ordering::SeqCst);
    let payshim = Payshim::start(&world.config()).await;
    wait_until("a first token call", Duration::from_secs(5), || {
        world.token_calls() >= 1
    })
    .await;
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no upstream token"), "{body}");
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 503);
    assert!(
        world.payment_tokens().is_empty(),
        "a payment went out without a token"
    );

    // The endpoint comes back: payshim retries on its own (backoff from 0.5 s).
    world.api.down.store(false, Ordering::SeqCst);
    wait_readyz(&payshim, 200, Duration::from_secs(10)).await;
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.payment_tokens(), vec![bearer(1)]);
    payshim.stop().await;
}

#[tokio::test]
async fn token_endpoint_down_when_the_token_expires_gives_503_then_recovers() {
    let world = World::new(2).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    let client = payshim.client(HttpVersion::Http1);
    assert_eq!(pay(&payshim, &client).await.status, 201);

    world.api.down.store(true, Ordering::SeqCst);
    // The refresh at 1.6 s fails; at 2 s the token expires and readiness goes.
    wait_readyz(&payshim, 503, Duration::from_secs(5)).await;
    assert!(world.token_calls() >= 2, "no refresh attempt");
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 503);
    assert_eq!(
        world.payment_tokens().len(),
        1,
        "sent with an expired token"
    );

    world.api.down.store(false, Ordering::SeqCst);
    wait_readyz(&payshim, 200, Duration::from_secs(10)).await;
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.payment_tokens().last(), Some(&bearer(2)));
    payshim.stop().await;
}

#[tokio::test]
async fn token_endpoint_down_during_a_401_refresh_recovers() {
    // A long-lived token (1 h) is refused upstream while the token endpoint is down: the
    // refresh fails, so this payment is a 502 and payshim has no usable token. When the
    // endpoint comes back, payshim must get a token again promptly, not when the old one
    // would have been due for refresh (48 min later).
    let world = World::new(3600).await;
    let payshim = Payshim::start(&world.config()).await;
    wait_readyz(&payshim, 200, Duration::from_secs(5)).await;
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());
    world.api.down.store(true, Ordering::SeqCst);
    let client = payshim.client(HttpVersion::Http1);
    let resp = pay(&payshim, &client).await;
    assert_api_error(&resp, 502);
    assert_eq!(
        world.payment_tokens(),
        vec![bearer(1)],
        "no resend without a token"
    );
    assert!(world.token_calls() >= 2, "no refresh attempt after the 401");

    world.api.down.store(false, Ordering::SeqCst);
    wait_readyz(&payshim, 200, Duration::from_secs(10)).await;
    let resp = pay(&payshim, &client).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.payment_tokens().last(), Some(&bearer(2)));
    payshim.stop().await;
}

#[tokio::test]
async fn token_endpoint_unreachable_gives_503_and_failing_readyz() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let down = format!("https://localhost:{}", closed.port());
    let payshim = Payshim::start(&managed_config(base_config(&pki, &down, audit.path()))).await;
    // Several attempts fail (0 s, 0.5 s, ...); readiness never comes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let resp = pay(&payshim, &payshim.client(HttpVersion::Http2)).await;
    assert_api_error(&resp, 503);
    payshim.stop().await;
}

// ---------------------------------------------------------------------------------------
// The log, on the real binary.

/// A running `payshim` binary with its stdout and stderr collected.
struct Binary {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Binary {
    fn start(config: &std::path::Path, dir: &std::path::Path, env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_payshim"));
        cmd.arg("--config")
            .arg(config)
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the payshim binary");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Binary { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The JSON log line with this message, once it is there.
    async fn wait_line(&mut self, message: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            for line in self.output().lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line)
                    && v["message"] == message
                {
                    return v;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("payshim exited ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} log line within {within:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits (at most 15 s) for the exit and the last output.
    async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("payshim did not stop on SIGTERM:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the reader threads take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.output()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An admin address from the `payshim serving` line.
fn port_of(line: &Value, field: &str) -> u16 {
    line[field]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {field} address in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_the_log() {
    const STOREFRONT_SECRET: &str = "sf-app-secret-2b7d9e4f6a1c3e5d";
    let world = World::new(3600).await;
    // The first two token calls fail (a failure streak to log), token 1 is then refused
    // by the payment route once (the 401 path), token 2 works.
    world.api.down.store(true, Ordering::SeqCst);
    world
        .api
        .rejected
        .lock()
        .unwrap()
        .push("upstream-token-1".into());

    let dir = tempfile::tempdir().unwrap();
    let toml = base_config(&world.pki, &world.upstream.url(), world.audit.path());
    let toml = set_key(&toml, "upstream.auth", "token", None);
    let toml = set_key(
        &toml,
        "upstream.auth",
        "client_id",
        Some(&toml_str(CLIENT_ID)),
    );
    // Debug level: the most the log can ever say.
    let mut toml = set_key(&toml, "log", "level", Some("\"debug\""));
    toml.push_str(&format!(
        r#"
[[clients]]
id = "server-app"
secret_sha256 = "{}"
"#,
        sha256_hex(STOREFRONT_SECRET)
    ));
    let config = dir.path().join("payshim.toml");
    std::fs::write(&config, toml).unwrap();
    // Secrets from the environment, as in production.
    let mut binary = Binary::start(
        &config,
        dir.path(),
        &[
            ("PAYSHIM__UPSTREAM__AUTH__CLIENT_SECRET", CLIENT_SECRET),
            ("PAYSHIM__AUTH__SESSION_KEY", SESSION_KEY),
        ],
    );
    let serving = binary
        .wait_line("payshim serving", Duration::from_secs(10))
        .await;
    let port = port_of(&serving, "listen");
    let admin_port = port_of(&serving, "admin");
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();

    // A failure streak of two token calls, then recovery.
    wait_until("two failed token calls", Duration::from_secs(5), || {
        world.token_calls() >= 2
    })
    .await;
    world.api.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_get(admin, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            binary.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ca_pem = std::fs::read_to_string(&world.pki.ca_path).unwrap();
    let client = TestClient::new(&ca_pem, HttpVersion::Http1);
    let url = |path: &str| format!("https://localhost:{port}{path}");

    // A session token through client_credentials (the storefront secret in the body).
    let resp = send(
        &client,
        Request::post(url("/oauth/access_token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Bytes::from(format!(
                "grant_type=client_credentials&client_id=server-app&client_secret={STOREFRONT_SECRET}"
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let session = resp.json()["access_token"].as_str().unwrap().to_string();

    // A payment with it: token 1 refused upstream, refresh, resend with token 2.
    let payment = |auth: String| {
        Request::post(url(&format!("/v2/orders/{ORDER}/payments")))
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(Bytes::from(payment_body()))
            .unwrap()
    };
    let resp = send(&client, payment(format!("Bearer {session}"))).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    // One with the API key, and a few refused ones (bad key, bad session token).
    let resp = send(&client, payment(format!("Bearer {STOREFRONT_KEY}"))).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let resp = send(&client, payment(format!("Bearer {STOREFRONT_KEY}x"))).await;
    assert_eq!(resp.status, 401);
    let resp = send(&client, payment(format!("Bearer {session}x"))).await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        world.payment_tokens(),
        vec![bearer(1), bearer(2), bearer(2)]
    );

    let log = binary.stop().await;
    // The log did record the run (so the absence checks below mean something).
    assert!(log.contains("\"message\":\"request\""), "{log}");
    let streak_lines = log
        .lines()
        .filter(|l| l.contains("cannot obtain an upstream token"))
        .count();
    assert_eq!(
        streak_lines, 1,
        "one log line per failure streak (two failed calls):\n{log}"
    );
    assert!(log.contains("upstream token endpoint recovered"), "{log}");
    assert!(
        log.contains("(401)"),
        "no line about the upstream 401:\n{log}"
    );
    for (what, secret) in [
        ("upstream client_secret", CLIENT_SECRET),
        ("upstream token", "upstream-token-"),
        ("session token", session.as_str()),
        ("session token MAC", session.rsplit('.').next().unwrap()),
        ("storefront secret", STOREFRONT_SECRET),
        ("storefront API key", STOREFRONT_KEY),
        ("session key", SESSION_KEY),
        ("audit key", AUDIT_KEY),
        ("card number", "4111111111111111"),
    ] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("the {what} appears in payshim's log: {line}");
        }
    }
}
