//! The core proxy end to end (issue 2): a real payshim (`payshim::run`, in process) between
//! a storefront test client and the upstream test double, on loopback with real TLS.
//!
//! Each test starts its own upstream and payshim on kernel-chosen ports, so all of them run
//! in parallel.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use support::client::StreamedBody;
use support::load::{
    ALPN_H1, ALPN_H2, complete, conn_request, h1_over, h2_over, tcp_connect, tls_connect,
};
use support::payshim::{
    ORDER, Payshim, STOREFRONT_KEY, UPSTREAM_TOKEN, admin_get, base_config, payment_body,
    payment_request, set_key,
};
use support::{
    HttpVersion, Recorded, Reply, TestPki, TestResponse, Upstream, World, closed_port, handler,
    moltin_like, tls11_client_hello,
};

const TRANSACTION: &str = "3f2a1b0c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

/// What the double answers to the payment in `seed_payment`: deliberately not in serde_json's
/// canonical form (spaces, key order), so only an unchanged body compares equal.
const UPSTREAM_ANSWER: &str = r#"{ "data": { "type": "transaction", "id": "5e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b", "gateway": "card_connect", "transaction-type": "purchase", "status": "complete", "amount": 4999, "currency": "USD" } }"#;

/// What this file adds to `World` (a trait: other files add their own).
trait WorldExt {
    fn config(&self) -> String;
}

impl WorldExt for World {
    /// A valid config pointing at this world's upstream.
    fn config(&self) -> String {
        self.base_config()
    }
}

fn bearer() -> String {
    format!("Bearer {STOREFRONT_KEY}")
}

/// `x-request-id` is present and a UUID version 7; returns it.
fn assert_request_id(resp: &TestResponse) -> String {
    let id = resp
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on a {} response", resp.status));
    let uuid = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("x-request-id {id:?}: {e}"));
    assert_eq!(
        uuid.get_version_num(),
        7,
        "x-request-id {id} is not a UUID v7"
    );
    id
}

/// payshim's own error: the status, `Content-Type: application/json` and the API error
/// format `{"errors":[{"status","title","detail","request_id"}]}` with the response's
/// request id.
fn assert_api_error(resp: &TestResponse, status: u16) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    let id = assert_request_id(resp);
    let json = resp.json();
    let errors = json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {json}"));
    assert!(!errors.is_empty(), "{json}");
    let first = &errors[0];
    assert_eq!(first["status"], status, "{json}");
    assert!(
        first["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{json}"
    );
    assert!(
        first["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{json}"
    );
    assert_eq!(first["request_id"].as_str(), Some(id.as_str()), "{json}");
}

/// The storefront key must never reach the upstream, in any header or the body.
fn assert_no_storefront_key(req: &Recorded) {
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(STOREFRONT_KEY),
            "storefront key forwarded in header {name}: {value}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&req.body).contains(STOREFRONT_KEY),
        "storefront key forwarded in the body"
    );
}

/// Sends with a guard, so a hang fails the test instead of stalling it.
async fn send(client: &support::TestClient, req: Request<Bytes>) -> Result<TestResponse, String> {
    tokio::time::timeout(Duration::from_secs(15), client.send(req))
        .await
        .expect("payshim answered (or failed) within 15 s")
}

async fn seed_payment(version: HttpVersion) {
    let world = World::new(handler(|_| Reply::Respond {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-upstream-trace".into(), "trace-81".into()),
        ],
        body: UPSTREAM_ANSWER.as_bytes().to_vec(),
    }))
    .await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(version);
    let body = payment_body();

    let resp = send(
        &client,
        payment_request(&payshim, &[("authorization", &bearer())], &body),
    )
    .await
    .expect("payment through payshim");

    let expected_version = match version {
        HttpVersion::Http1 => Version::HTTP_11,
        HttpVersion::Http2 => Version::HTTP_2,
    };
    assert_eq!(resp.version, expected_version);
    // The upstream's answer comes back unchanged: status, body bytes, its own headers.
    assert_eq!(resp.status, 201, "body: {}", resp.text());
    assert_eq!(resp.body, Bytes::from_static(UPSTREAM_ANSWER.as_bytes()));
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(resp.header("x-upstream-trace").as_deref(), Some("trace-81"));
    assert_request_id(&resp);

    // Exactly one request upstream, with the store's token instead of the storefront key.
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 1);
    let req = &recorded[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, format!("/v2/orders/{ORDER}/payments"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
    assert_no_storefront_key(req);
    // payshim's own address never leaks upstream as the Host.
    if let Some(host) = req.header("host") {
        assert_eq!(host, format!("localhost:{}", world.upstream.addr().port()));
    }
    // The body may be re-serialized canonically: compare the parsed fields.
    let sent: Value = serde_json::from_str(&body).unwrap();
    let got = req.json();
    for field in [
        "gateway",
        "method",
        "first_name",
        "last_name",
        "number",
        "month",
        "year",
        "verification_value",
    ] {
        assert_eq!(got["data"][field], sent["data"][field], "data.{field}");
    }
    payshim.stop().await;
}

/// One test per row: `name: scenario(arguments);`. A table of cases that keeps each case a
/// test of its own (its own name in the report, run in parallel with the others).
macro_rules! cases {
    ($($name:ident: $scenario:ident($($arg:expr),*);)*) => {$(
        #[tokio::test]
        async fn $name() {
            $scenario($($arg),*).await;
        }
    )*};
}

cases! {
    seed_payment_over_http1_reaches_upstream_with_the_store_token: seed_payment(HttpVersion::Http1);
    seed_payment_over_http2_reaches_upstream_with_the_store_token: seed_payment(HttpVersion::Http2);
}

#[tokio::test]
async fn host_header_is_the_upstreams() {
    // A plain loopback upstream (allowed for tests) is spoken to over HTTP/1.1, where the
    // Host header is explicit.
    let pki = TestPki::new();
    let upstream = Upstream::start_plain(moltin_like()).await;
    let audit = tempfile::tempdir().unwrap();
    let payshim = Payshim::start(&base_config(&pki, &upstream.url(), audit.path())).await;
    let client = payshim.client(HttpVersion::Http1);
    let resp = send(
        &client,
        Request::get(payshim.url(&format!("/v2/orders/{ORDER}/transactions")))
            .header("authorization", bearer())
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let req = &upstream.requests()[0];
    assert_eq!(
        req.header("host"),
        Some(format!("127.0.0.1:{}", upstream.addr().port()))
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    payshim.stop().await;
}

#[tokio::test]
async fn old_sdk_bearer_colon_form_is_accepted() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(HttpVersion::Http1);
    let old_form = format!("Bearer: {STOREFRONT_KEY}");
    let resp = send(
        &client,
        payment_request(&payshim, &[("authorization", &old_form)], &payment_body()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_request_id(&resp);
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_no_storefront_key(&recorded[0]);
    payshim.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_and_cookies_are_not_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    // HTTP/1.1: the only version where a client can send connection-specific headers.
    let client = payshim.client(HttpVersion::Http1);
    let resp = send(
        &client,
        payment_request(
            &payshim,
            &[
                ("authorization", &bearer()),
                ("connection", "x-foo"),
                ("x-foo", "hop-value"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
                ("cookie", "session=shopper-session-1"),
                ("x-moltin-sdk-language", "JS"),
            ],
            &payment_body(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let req = &world.upstream.requests()[0];
    for name in [
        "connection",
        "x-foo",
        "keep-alive",
        "proxy-authorization",
        "cookie",
    ] {
        assert!(
            req.headers.get(name).is_none(),
            "{name} was forwarded: {:?}",
            req.headers
        );
    }
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains("hop-value") && !value.contains("shopper-session-1"),
            "{name}: {value}"
        );
    }
    // Ordinary end-to-end headers do go through.
    assert_eq!(req.header("x-moltin-sdk-language").as_deref(), Some("JS"));
    payshim.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_never_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        for (method, path) in [
            (Method::GET, "/v2/products".to_string()),
            (Method::GET, "/".to_string()),
            (Method::GET, format!("/v2/orders/{ORDER}")),
            (Method::DELETE, format!("/v2/orders/{ORDER}")),
            (Method::GET, format!("/v2/orders/{ORDER}/payments")),
            (Method::POST, format!("/v2/orders/{ORDER}/payments/")),
            (
                Method::POST,
                format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}/void"),
            ),
        ] {
            for auth in [Some(bearer()), None] {
                let mut builder = Request::builder()
                    .method(method.clone())
                    .uri(payshim.url(&path))
                    .header("content-type", "application/json");
                if let Some(auth) = &auth {
                    builder = builder.header("authorization", auth);
                }
                let body = if method == Method::POST {
                    Bytes::from(payment_body())
                } else {
                    Bytes::new()
                };
                let resp = send(&client, builder.body(body).unwrap()).await.unwrap();
                assert_api_error(&resp, 404);
            }
        }
    }
    assert_eq!(world.upstream.count(), 0, "{:?}", world.upstream.requests());
    payshim.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_storefront_key_is_401_json_and_never_forwarded() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let wrong = [
        None,
        Some("Bearer not-the-storefront-key".to_string()),
        Some(format!("Bearer {UPSTREAM_TOKEN}")),
        Some(format!("Bearer {STOREFRONT_KEY}x")),
        Some(format!("Basic {STOREFRONT_KEY}")),
        Some("Bearer".to_string()),
        Some(String::new()),
    ];
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        for auth in &wrong {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            let resp = send(
                &client,
                payment_request(&payshim, &headers, &payment_body()),
            )
            .await
            .unwrap();
            assert_api_error(&resp, 401);
            assert!(
                !resp.text().contains(STOREFRONT_KEY) && !resp.text().contains(UPSTREAM_TOKEN),
                "the error echoes a credential: {}",
                resp.text()
            );

            let mut get = Request::get(payshim.url(&format!("/v2/orders/{ORDER}/transactions")));
            if let Some(a) = auth {
                get = get.header("authorization", a);
            }
            let resp = send(&client, get.body(Bytes::new()).unwrap())
                .await
                .unwrap();
            assert_api_error(&resp, 401);
        }
    }
    assert_eq!(world.upstream.count(), 0, "{:?}", world.upstream.requests());
    payshim.stop().await;
}

#[tokio::test]
async fn tls11_only_client_is_refused() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let answer = tls11_client_hello(payshim.addr)
        .await
        .expect("payshim answers a TLS 1.1 hello");
    assert_eq!(
        answer[0], 0x15,
        "expected a TLS alert record, got {answer:02x?}"
    );
    // payshim keeps serving TLS 1.2+ clients.
    let resp = send(
        &payshim.client(HttpVersion::Http2),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

/// A client config offering only TLS 1.2 (aws-lc-rs), trusting `ca_pem`, offering `alpn`.
fn tls12_only_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("parse CA PEM")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2 with aws-lc-rs")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn tls12_only_client_is_served() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let port = payshim.addr.port();
    for (version, alpn) in [(HttpVersion::Http1, ALPN_H1), (HttpVersion::Http2, ALPN_H2)] {
        let connector = tokio_rustls::TlsConnector::from(tls12_only_config(&payshim.ca_pem, alpn));
        let tcp = tcp_connect(payshim.addr, None).await.expect("TCP connect");
        let tls = tokio::time::timeout(
            Duration::from_secs(5),
            connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .expect("TLS 1.2 handshake within 5 s")
        .unwrap_or_else(|e| panic!("{version:?}: payshim refused a TLS 1.2-only client: {e}"));
        let session = tls.get_ref().1;
        assert_eq!(
            session.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2),
            "{version:?}: negotiated version"
        );
        assert_eq!(session.alpn_protocol(), Some(alpn), "{version:?}: ALPN");
        let suite = session
            .negotiated_cipher_suite()
            .expect("a negotiated cipher suite");
        assert_eq!(suite.version(), &rustls::version::TLS12, "{suite:?}");

        let req = conn_request(
            version,
            port,
            Method::POST,
            &format!("/v2/orders/{ORDER}/payments"),
            &[
                ("authorization", &bearer()),
                ("content-type", "application/json"),
            ],
            &payment_body(),
        );
        let resp = match version {
            HttpVersion::Http1 => {
                let mut sender = h1_over(tls).await.expect("HTTP/1.1 over TLS 1.2");
                complete(sender.send_request(req)).await
            }
            HttpVersion::Http2 => {
                let mut sender = h2_over(tls).await.expect("HTTP/2 over TLS 1.2");
                complete(sender.send_request(req)).await
            }
        }
        .unwrap_or_else(|e| panic!("{version:?}: payment over TLS 1.2: {e}"));
        assert_eq!(resp.status, 201, "{version:?}: {}", resp.text());
        assert_eq!(resp.json()["data"]["type"], "transaction", "{version:?}");
        assert_request_id(&resp);
    }
    assert_eq!(world.upstream.count(), 2, "{:?}", world.upstream.requests());
    payshim.stop().await;
}

#[tokio::test]
async fn upstream_down_is_502_json() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let closed = closed_port();
    let down = format!("https://localhost:{}", closed.port());
    let payshim = Payshim::start(&base_config(&pki, &down, audit.path())).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = send(
            &payshim.client(version),
            payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
        )
        .await
        .unwrap();
        assert_api_error(&resp, 502);
    }
    payshim.stop().await;
}

#[tokio::test]
async fn slow_upstream_is_504_json_and_not_retried() {
    let world = World::new(handler(|_| {
        Reply::json(201, serde_json::json!({"data": {"late": true}}))
            .delayed(Duration::from_millis(1500))
    }))
    .await;
    let config = set_key(&world.config(), "upstream", "timeout", Some("\"400ms\""));
    let payshim = Payshim::start(&config).await;
    let started = Instant::now();
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_api_error(&resp, 504);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1400),
        "504 after {took:?}: not the 400 ms upstream.timeout"
    );
    // A retry would arrive right after the timeout; give it the time to show up.
    assert!(
        !world
            .upstream
            .wait_for_requests(2, Duration::from_millis(800))
            .await,
        "the payment was sent upstream again: {:?}",
        world.upstream.requests()
    );
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

/// Which route an upstream reset is tried on: the payment (its answer is buffered for the
/// audit) or a transaction read (its answer is streamed back as it arrives).
#[derive(Clone, Copy, Debug)]
enum ResetRoute {
    Payment,
    TransactionRead,
}

impl ResetRoute {
    fn request(self, payshim: &Payshim) -> Request<Bytes> {
        match self {
            ResetRoute::Payment => {
                payment_request(payshim, &[("authorization", &bearer())], &payment_body())
            }
            ResetRoute::TransactionRead => {
                Request::get(payshim.url(&format!("/v2/orders/{ORDER}/transactions")))
                    .header("authorization", bearer())
                    .body(Bytes::new())
                    .unwrap()
            }
        }
    }
}

/// The upstream answered 200 with `Content-Length: 1000`, sent part of the body and reset
/// the connection. The storefront must see that the answer broke: a transport or protocol
/// error (HTTP/1.1: the connection ends before the declared `Content-Length`, which hyper
/// reports as a failed body read; HTTP/2: a reset stream), or a response that is not a
/// success (payshim's own 502). Never a clean 2xx: a storefront would take a truncated
/// transaction for a complete one.
#[track_caller]
fn assert_reset_answer_not_delivered_as_success(
    outcome: &Result<TestResponse, String>,
    what: &str,
) {
    match outcome {
        Err(e) => assert!(!e.is_empty(), "{what}: an error without a description"),
        Ok(resp) => assert!(
            !(200..300).contains(&resp.status),
            "{what}: SILENT TRUNCATION: the upstream reset its answer after {} of the {} bytes \
             it declared, yet the storefront got a clean {} with a {}-byte body \
             (content-length {:?}): {}",
            support::upstream::RESET_PARTIAL_BODY.len(),
            support::upstream::RESET_ANNOUNCED_LENGTH,
            resp.status,
            resp.body.len(),
            resp.header("content-length"),
            resp.text()
        ),
    }
}

async fn upstream_reset_mid_response(version: HttpVersion, route: ResetRoute) {
    let what = format!("{route:?} over {version:?}");
    let world = World::new(handler(|_| Reply::ResetAfterHeaders)).await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(version);

    let outcome = send(&client, route.request(&payshim)).await;
    assert_reset_answer_not_delivered_as_success(&outcome, &what);
    match &outcome {
        Ok(resp) => eprintln!("{what}: reset answer came back as {}", resp.status),
        Err(e) => eprintln!("{what}: reset answer came back as an error: {e}"),
    }
    assert!(
        !world
            .upstream
            .wait_for_requests(2, Duration::from_millis(500))
            .await,
        "{what}: the request was sent upstream again after a reset"
    );
    assert_eq!(world.upstream.count(), 1, "{what}");

    // payshim keeps serving: the next request, same client, same payshim, succeeds.
    world.upstream.set_handler(moltin_like());
    let resp = send(&client, route.request(&payshim))
        .await
        .unwrap_or_else(|e| panic!("{what}: the request after a reset: {e}"));
    match route {
        ResetRoute::Payment => {
            assert_eq!(resp.status, 201, "{what}: {}", resp.text());
            assert_eq!(resp.json()["data"]["type"], "transaction", "{what}");
        }
        ResetRoute::TransactionRead => {
            assert_eq!(resp.status, 200, "{what}: {}", resp.text());
            assert_eq!(resp.json()["data"][0]["type"], "transaction", "{what}");
        }
    }
    assert_eq!(world.upstream.count(), 2, "{what}");
    payshim.stop().await;
}

cases! {
    upstream_reset_mid_response_http1:
        upstream_reset_mid_response(HttpVersion::Http1, ResetRoute::Payment);
    upstream_reset_mid_response_http2:
        upstream_reset_mid_response(HttpVersion::Http2, ResetRoute::Payment);
    upstream_reset_mid_streamed_response_http1:
        upstream_reset_mid_response(HttpVersion::Http1, ResetRoute::TransactionRead);
    upstream_reset_mid_streamed_response_http2:
        upstream_reset_mid_response(HttpVersion::Http2, ResetRoute::TransactionRead);
}

#[tokio::test]
async fn upstream_closing_without_answer_is_502_and_not_retried() {
    let world = World::new(handler(|_| Reply::CloseImmediately)).await;
    let payshim = Payshim::start(&world.config()).await;
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 502);
    assert!(
        !world
            .upstream
            .wait_for_requests(2, Duration::from_millis(500))
            .await,
        "the payment was sent upstream again after the connection closed"
    );
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

#[tokio::test]
async fn body_over_max_body_is_413_and_never_forwarded() {
    let world = World::new(moltin_like()).await;
    // Through an environment override, as an operator would.
    let env = HashMap::from([("PAYSHIM__LIMITS__MAX_BODY".to_string(), "1KiB".to_string())]);
    let payshim = Payshim::start_with_env(&world.config(), &env).await;
    let big = serde_json::json!({
        "data": {
            "gateway": "card_connect",
            "method": "purchase",
            "first_name": "A".repeat(2048),
            "last_name": "Lovelace",
            "number": "4111111111111111",
            "month": "12",
            "year": "2031",
            "verification_value": "123"
        }
    })
    .to_string();
    assert!(big.len() > 2048);
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = send(
            &payshim.client(version),
            payment_request(&payshim, &[("authorization", &bearer())], &big),
        )
        .await
        .unwrap();
        assert_api_error(&resp, 413);
    }
    assert_eq!(world.upstream.count(), 0);
    // Under the limit still goes through.
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

/// A configured passthrough route that takes a request body.
const CART_ITEMS: &str = "/v2/carts/cart-7/items";

/// POSTs `body` to `path` over a fresh connection of `version`, streamed: no
/// `Content-Length`, so HTTP/1.1 sends it chunked and HTTP/2 as DATA frames without a
/// `content-length` header. The storefront key and `Content-Type: application/json` go
/// with it.
async fn post_streamed(
    payshim: &Payshim,
    version: HttpVersion,
    path: &str,
    body: StreamedBody,
) -> Result<TestResponse, String> {
    use hyper::body::Body as _;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    assert!(
        body.size_hint().exact().is_none(),
        "a streamed body must not announce its length"
    );
    let port = payshim.addr.port();
    let (alpn, builder) = match version {
        HttpVersion::Http1 => (
            ALPN_H1,
            Request::post(path).header("host", format!("localhost:{port}")),
        ),
        HttpVersion::Http2 => (
            ALPN_H2,
            Request::post(payshim.url(path)).version(Version::HTTP_2),
        ),
    };
    let req = builder
        .header("authorization", bearer())
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let tls = tls_connect(
        payshim.addr,
        &payshim.ca_pem,
        alpn,
        None,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("TLS: {e}"))?;
    match version {
        HttpVersion::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            complete(sender.send_request(req)).await
        }
        HttpVersion::Http2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            complete(sender.send_request(req)).await
        }
    }
}

/// The `Content-Length` branch of the body limit is covered above; this is the other one: a
/// body whose size is not announced (HTTP/1.1 chunked, HTTP/2 DATA frames) and turns out to
/// be over `limits.max_body` (16 KiB) while it is read. 413 in the API format, nothing
/// forwarded, on the payment route and on a configured passthrough route. The same streamed
/// bodies under the limit still go through, so the 413 is about the size, not the framing.
#[tokio::test]
async fn streamed_body_over_max_body_is_413_and_never_forwarded() {
    const MAX_BODY: usize = 16 * 1024;
    let world = World::new(moltin_like()).await;
    let mut config = world.config();
    assert!(config.contains("max_body = \"16KiB\""), "{config}");
    config.push_str("\n[[routes]]\nmethod = \"POST\"\npath = \"/v2/carts/{id}/items\"\n");
    let payshim = Payshim::start(&config).await;
    let payments = format!("/v2/orders/{ORDER}/payments");

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        for path in [payments.as_str(), CART_ITEMS] {
            let what = format!("{version:?} POST {path}");
            // max_body + 8 KiB, in 4 KiB pieces.
            let body = StreamedBody::new(b'a', MAX_BODY + 8 * 1024, 4096);
            let resp = post_streamed(&payshim, version, path, body)
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer to an oversized streamed body: {e}"));
            assert_eq!(resp.status, 413, "{what}: {}", resp.text());
            assert_api_error(&resp, 413);
        }
    }
    assert_eq!(
        world.upstream.count(),
        0,
        "an oversized streamed body was forwarded: {:?}",
        world
            .upstream
            .requests()
            .iter()
            .map(|r| (r.path.clone(), r.body.len()))
            .collect::<Vec<_>>()
    );

    // Under the limit, streamed the same way, both routes still work.
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let payment = payment_body();
        let pieces = payment
            .as_bytes()
            .chunks(40)
            .map(Bytes::copy_from_slice)
            .collect::<Vec<_>>();
        let resp = post_streamed(&payshim, version, &payments, StreamedBody::pieces(pieces))
            .await
            .unwrap_or_else(|e| panic!("{version:?}: streamed payment: {e}"));
        assert_eq!(resp.status, 201, "{version:?}: {}", resp.text());
        let recorded = world.upstream.requests().pop().unwrap();
        assert_eq!(recorded.json()["data"]["number"], "4111111111111111");

        // Just under the limit on the passthrough route: forwarded byte for byte.
        let body = StreamedBody::new(b'b', MAX_BODY, 4096);
        let resp = post_streamed(&payshim, version, CART_ITEMS, body)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: streamed passthrough: {e}"));
        assert_eq!(resp.status, 200, "{version:?}: {}", resp.text());
        let recorded = world.upstream.requests().pop().unwrap();
        assert_eq!(recorded.path, CART_ITEMS);
        assert_eq!(recorded.body, Bytes::from(vec![b'b'; MAX_BODY]));
    }
    assert_eq!(world.upstream.count(), 4);
    payshim.stop().await;
}

#[tokio::test]
async fn admin_listener_serves_healthz_and_readyz() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let (status, body) = admin_get(payshim.admin, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_get(payshim.admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // Plain HTTP through the test client too.
    let resp = support::TestClient::new(&payshim.ca_pem, HttpVersion::Http1)
        .get(&payshim.admin_url("/healthz"), None)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    // The admin endpoints are not on the public listener.
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        Request::get(payshim.url("/healthz"))
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 404);
    assert_eq!(world.upstream.count(), 0);
    payshim.stop().await;
}

#[tokio::test]
async fn transactions_read_is_forwarded_as_is() {
    const LIST: &str = r#"{"data":[ {"id":"3f2a1b0c-4d5e-4f60-8a7b-9c0d1e2f3a4b","type":"transaction"} ],"meta":{}}"#;
    let world = World::new(handler(|_| Reply::Respond {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: LIST.as_bytes().to_vec(),
    }))
    .await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(HttpVersion::Http2);
    for path in [
        format!("/v2/orders/{ORDER}/transactions?page=2"),
        format!("/v2/orders/{ORDER}/transactions/{TRANSACTION}"),
    ] {
        let resp = send(
            &client,
            Request::get(payshim.url(&path))
                .header("authorization", bearer())
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.body, Bytes::from_static(LIST.as_bytes()), "{path}");
        assert_request_id(&resp);
        let req = world.upstream.requests().pop().unwrap();
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.path, path);
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {UPSTREAM_TOKEN}"))
        );
    }
    assert_eq!(world.upstream.count(), 2);
    payshim.stop().await;
}

#[tokio::test]
async fn configured_passthrough_route_is_forwarded_and_similar_ones_are_not() {
    let world = World::new(moltin_like()).await;
    let mut config = world.config();
    config.push_str("\n[[routes]]\nmethod = \"GET\"\npath = \"/v2/orders/{uuid}\"\n");
    let payshim = Payshim::start(&config).await;
    let client = payshim.client(HttpVersion::Http1);
    let get = |path: &str| {
        Request::get(payshim.url(path))
            .header("authorization", bearer())
            .body(Bytes::new())
            .unwrap()
    };

    let path = format!("/v2/orders/{ORDER}?include=items");
    let resp = send(&client, get(&path)).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), serde_json::json!({"data": {}}));
    assert_request_id(&resp);
    let recorded = world.upstream.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, Method::GET);
    assert_eq!(recorded[0].path, path);
    assert_eq!(
        recorded[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );

    // Same shape, not configured: other method, longer path, not a UUID.
    for req in [
        Request::delete(payshim.url(&format!("/v2/orders/{ORDER}")))
            .header("authorization", bearer())
            .body(Bytes::new())
            .unwrap(),
        get(&format!("/v2/orders/{ORDER}/items")),
        get("/v2/orders/12345"),
        get("/v2/customers/7d3c1a52-9e4f-4b8a-8c6d-2e5f4a3b1c0d"),
    ] {
        let uri = req.uri().clone();
        let resp = send(&client, req).await.unwrap();
        assert_eq!(resp.status, 404, "{uri}");
        assert_api_error(&resp, 404);
    }
    // And the configured route still needs a storefront key.
    let resp = send(
        &client,
        Request::get(payshim.url(&format!("/v2/orders/{ORDER}")))
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 401);
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

#[tokio::test]
async fn request_ids_are_unique_uuid_v7() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let client = payshim.client(HttpVersion::Http2);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = send(
            &client,
            payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 201);
        ids.push(assert_request_id(&resp));
        let resp = send(
            &client,
            Request::get(payshim.url("/nope"))
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
        ids.push(assert_request_id(&resp));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    payshim.stop().await;
}

#[tokio::test]
async fn sandbox_answers_payments_without_an_upstream() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let config = base_config(&pki, "sandbox", audit.path());
    let config = set_key(&config, "upstream.auth", "token", None);
    let payshim = Payshim::start(&config).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let resp = send(
            &payshim.client(version),
            payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
        )
        .await
        .unwrap();
        // Today's API answers a payment with 200.
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-payshim-sandbox").as_deref(), Some("true"));
        assert_request_id(&resp);
        let json = resp.json();
        assert_eq!(json["data"]["type"], "transaction", "{json}");
        assert_eq!(
            json["data"]["relationships"]["order"]["data"]["id"], ORDER,
            "{json}"
        );
        assert!(!resp.text().contains("4111111111111111"));
    }
    // The sandbox still requires a storefront credential.
    let resp = send(
        &payshim.client(HttpVersion::Http1),
        payment_request(&payshim, &[], &payment_body()),
    )
    .await
    .unwrap();
    assert_api_error(&resp, 401);
    payshim.stop().await;
}

#[tokio::test]
async fn sandbox_on_a_non_loopback_address_is_refused() {
    let pki = TestPki::new();
    let audit = tempfile::tempdir().unwrap();
    let sandbox = base_config(&pki, "sandbox", audit.path());
    let no_env = HashMap::new();
    payshim::config::from_toml(&sandbox, &no_env).expect("sandbox on loopback is fine");

    let public = set_key(&sandbox, "server", "listen", Some("\"0.0.0.0:0\""));
    let err = payshim::config::from_toml(&public, &no_env).expect_err("sandbox on 0.0.0.0");
    assert_eq!(err.key, "server.listen", "{err}");

    let env = HashMap::from([(
        "PAYSHIM__ADMIN__LISTEN".to_string(),
        "0.0.0.0:9901".to_string(),
    )]);
    let err = payshim::config::from_toml(&sandbox, &env).expect_err("sandbox admin on 0.0.0.0");
    assert_eq!(err.key, "admin.listen", "{err}");

    // A real upstream may listen anywhere.
    let real = base_config(&pki, "https://api.moltin.com", audit.path());
    let real = set_key(&real, "server", "listen", Some("\"0.0.0.0:0\""));
    payshim::config::from_toml(&real, &no_env).expect("a real upstream on 0.0.0.0");
}
