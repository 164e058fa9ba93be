//! The managed upstream token (issue 4): with `upstream.auth.client_id` + `client_secret`,
//! payshim gets the store's token from `{upstream.url}/oauth/access_token`
//! (client_credentials), refreshes it at 80% of `expires_in` from one place (never one
//! token call per request), refreshes once and resends once after an upstream 401, answers
//! 503 and fails `/readyz` while no token can be had, and recovers when the endpoint does.
//! Its secrets and tokens never reach the log (checked on the real binary's output).
//!
//! The token double issues short-lived tokens (`expires_in` 2 s), so the whole module runs in
//! a few seconds.
//!
//! `refresh.rs`: the token fetch and its one refresh at 80%, and payments at start-up;
//! `rejections.rs`: an upstream 401; `outages.rs`: the token endpoint down or unreachable;
//! `log.rs`: no secret or token in the real binary's log. The doubles and helpers they
//! share are here.

mod log;
mod outages;
mod refresh;
mod rejections;

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::json;
use tempfile::TempDir;

use support::payshim::{
    ORDER, Payshim, STOREFRONT_KEY, admin_get, base_config, payment_body, payment_request, set_key,
    toml_str,
};
use support::upstream::transaction;
use support::{
    Handler, HttpVersion, Recorded, Reply, TestClient, TestPki, TestResponse, Upstream, handler,
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
