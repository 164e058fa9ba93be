//! Self-tests of `support`: the upstream double, the PKI and the test client work before
//! the integration tests rely on them.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Version};
use serde_json::json;

use support::upstream::{RESET_PARTIAL_BODY, handler};
use support::{
    HttpVersion, Reply, TestClient, TestPki, Upstream, blackhole, closed_port, moltin_like,
    tls11_client_hello,
};

const ORDER: &str = "9a1b7c52-0f3e-4b8a-9d6c-2e5f4a3b1c0d";

async fn records_request_and_answers(version: HttpVersion) {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let client = TestClient::new(&pki.ca_pem, version);
    let body = r#"{"data":{"gateway":"card_connect","method":"authorize","first_name":"Ada"}}"#;
    let url = format!("{}/v2/orders/{ORDER}/payments", upstream.url());

    let resp = client
        .post_json(&url, Some("store-token"), body)
        .await
        .expect("payment request");

    let expected_version = match version {
        HttpVersion::Http1 => Version::HTTP_11,
        HttpVersion::Http2 => Version::HTTP_2,
    };
    assert_eq!(resp.version, expected_version);
    assert_eq!(resp.status, 201);
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    let json = resp.json();
    assert_eq!(json["data"]["type"], "transaction");
    assert_eq!(json["data"]["gateway"], "card_connect");
    assert_eq!(json["data"]["transaction-type"], "authorize");
    assert_eq!(json["data"]["status"], "complete");
    assert_eq!(json["data"]["relationships"]["order"]["data"]["id"], ORDER);
    assert_eq!(json["data"]["id"].as_str().unwrap().len(), 36);
    assert!(
        (450..=800).contains(&resp.body.len()),
        "transaction is {} bytes",
        resp.body.len()
    );

    assert!(upstream.wait_for_requests(1, Duration::from_secs(5)).await);
    let recorded = upstream.requests();
    assert_eq!(recorded.len(), 1);
    let req = &recorded[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, format!("/v2/orders/{ORDER}/payments"));
    assert_eq!(
        req.header("authorization").as_deref(),
        Some("Bearer store-token")
    );
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(req.body, Bytes::from(body));
    assert_eq!(req.json()["data"]["first_name"], "Ada");

    // A GET with a query string is recorded with the query.
    let resp = client
        .get(
            &format!("{}/v2/orders/{ORDER}/transactions?page=2", upstream.url()),
            None,
        )
        .await
        .expect("transactions request");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["data"][0]["type"], "transaction");
    assert_eq!(upstream.count(), 2);
    let req = &upstream.requests()[1];
    assert_eq!(req.method, Method::GET);
    assert_eq!(req.path, format!("/v2/orders/{ORDER}/transactions?page=2"));
    assert!(req.headers.get("authorization").is_none());
    assert!(req.body.is_empty());
}

#[tokio::test]
async fn http1_request_is_recorded_and_answered() {
    records_request_and_answers(HttpVersion::Http1).await;
}

#[tokio::test]
async fn http2_request_is_recorded_and_answered() {
    records_request_and_answers(HttpVersion::Http2).await;
}

#[tokio::test]
async fn moltin_like_token_endpoint_and_default_answer() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let url = format!("{}/oauth/access_token", upstream.url());
    let form = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from_static(
            b"grant_type=client_credentials&client_id=a&client_secret=b",
        ))
        .unwrap();
    let first = client.send(form.clone()).await.unwrap().json();
    let second = client.send(form).await.unwrap().json();
    assert_eq!(first["access_token"], "upstream-token-1");
    assert_eq!(second["access_token"], "upstream-token-2");
    assert_eq!(first["expires_in"], 3600);
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["identifier"], "client_credentials");
    assert!(first["expires"].as_u64().unwrap() > 1_700_000_000);

    let other = client
        .get(&format!("{}/v2/orders/{ORDER}", upstream.url()), None)
        .await
        .unwrap();
    assert_eq!(other.status, 200);
    assert_eq!(other.json(), json!({"data": {}}));
    assert_eq!(
        upstream.requests()[0].body,
        Bytes::from_static(b"grant_type=client_credentials&client_id=a&client_secret=b")
    );
}

#[tokio::test]
async fn delay_reply_is_delayed_and_set_handler_applies() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    upstream.set_handler(handler(|_| {
        Reply::Delay(
            Duration::from_millis(400),
            Box::new(Reply::json(202, json!({"late": true}))),
        )
    }));
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    let started = Instant::now();
    let resp = client.get(&upstream.url(), None).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(resp.status, 202);
    assert_eq!(resp.json()["late"], true);
}

#[tokio::test]
async fn wait_for_requests_sees_requests_and_times_out() {
    let pki = TestPki::new();
    let upstream = Arc::new(Upstream::start(&pki, moltin_like()).await);
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let url = upstream.url();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.get(&url, None).await.unwrap();
        client.get(&url, None).await.unwrap();
    });
    assert!(upstream.wait_for_requests(2, Duration::from_secs(5)).await);
    sender.await.unwrap();
    assert!(
        !upstream
            .wait_for_requests(3, Duration::from_millis(200))
            .await
    );
}

async fn reset_after_headers_is_an_error(version: HttpVersion) {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, handler(|_| Reply::ResetAfterHeaders)).await;
    let client = TestClient::new(&pki.ca_pem, version);
    let err = client
        .post_json(
            &format!("{}/v2/orders/{ORDER}/payments", upstream.url()),
            None,
            "{}",
        )
        .await
        .expect_err("a reset mid-body must be an error");
    assert!(!err.is_empty());
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.requests()[0].body, Bytes::from_static(b"{}"));
    // The double keeps serving other connections.
    upstream.set_handler(moltin_like());
    let fresh = TestClient::new(&pki.ca_pem, version);
    assert_eq!(fresh.get(&upstream.url(), None).await.unwrap().status, 200);
}

#[tokio::test]
async fn reset_after_headers_http1() {
    reset_after_headers_is_an_error(HttpVersion::Http1).await;
}

#[tokio::test]
async fn reset_after_headers_http2() {
    reset_after_headers_is_an_error(HttpVersion::Http2).await;
}

#[tokio::test]
async fn reset_after_headers_sends_headers_then_partial_body() {
    // Read the raw HTTP/1.1 exchange over TLS to see exactly what the double sends.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, handler(|_| Reply::ResetAfterHeaders)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(support::pki::load_certs(&pki.ca_path).remove(0))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(upstream.addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    let outcome = loop {
        match tls.read(&mut buf).await {
            Ok(0) => break "eof".to_owned(),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break format!("{:?}", e.kind()),
        }
    };
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-length: 1000"), "{text}");
    let body_start = text.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(&received[body_start..], RESET_PARTIAL_BODY);
    // The connection ends with a TCP reset, not a FIN (with or without TLS close_notify).
    assert_eq!(outcome, "ConnectionReset", "expected an abortive close");
}

async fn close_immediately_is_an_error(version: HttpVersion) {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, handler(|_| Reply::CloseImmediately)).await;
    let client = TestClient::new(&pki.ca_pem, version);
    let err = client
        .post_json(&upstream.url(), None, r#"{"a":1}"#)
        .await
        .expect_err("a close without an answer must be an error");
    assert!(!err.is_empty());
    assert_eq!(upstream.count(), 1);
    assert_eq!(
        upstream.requests()[0].body,
        Bytes::from_static(br#"{"a":1}"#)
    );
}

#[tokio::test]
async fn close_immediately_http1() {
    close_immediately_is_an_error(HttpVersion::Http1).await;
}

#[tokio::test]
async fn close_immediately_http2() {
    close_immediately_is_an_error(HttpVersion::Http2).await;
}

#[tokio::test]
async fn plain_upstream_serves_http1_and_h2c() {
    let pki = TestPki::new();
    let upstream = Upstream::start_plain(moltin_like()).await;
    assert!(upstream.url().starts_with("http://127.0.0.1:"));
    for (version, expected) in [
        (HttpVersion::Http1, Version::HTTP_11),
        (HttpVersion::Http2, Version::HTTP_2),
    ] {
        let client = TestClient::new(&pki.ca_pem, version);
        let resp = client
            .post_json(
                &format!("{}/v2/orders/{ORDER}/payments", upstream.url()),
                None,
                "{}",
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(resp.version, expected);
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn client_certificates_valid_expired_and_missing() {
    let pki = TestPki::new();
    let upstream = Upstream::start_with_tls(Arc::new(pki.server_config(true)), moltin_like()).await;

    let (cert, key) = pki.client_cert("web-eu");
    assert!(cert.starts_with(pki.dir()) && key.starts_with(pki.dir()));
    let good = TestClient::with_client_cert(&pki.ca_pem, HttpVersion::Http1, &cert, &key);
    assert_eq!(good.get(&upstream.url(), None).await.unwrap().status, 200);

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let (cert, key) = pki.expired_client_cert("web-eu");
        let expired = TestClient::with_client_cert(&pki.ca_pem, version, &cert, &key);
        let err = expired
            .get(&upstream.url(), None)
            .await
            .expect_err("an expired client certificate must be refused");
        assert!(!err.is_empty());

        let anonymous = TestClient::new(&pki.ca_pem, version);
        anonymous
            .get(&upstream.url(), None)
            .await
            .expect_err("a missing client certificate must be refused");
    }
    // Refused handshakes never reach the handler.
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn server_certificate_is_trusted_only_with_this_ca() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    // Valid for 127.0.0.1 too.
    let by_ip = TestClient::new(&pki.ca_pem, HttpVersion::Http1)
        .get(
            &format!("https://127.0.0.1:{}/", upstream.addr().port()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(by_ip.status, 200);
    let err = TestClient::new(&other.ca_pem, HttpVersion::Http1)
        .get(&upstream.url(), None)
        .await
        .expect_err("an unknown CA must be refused");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let ca_file = std::fs::read_to_string(&pki.ca_path).unwrap();
    assert_eq!(ca_file, pki.ca_pem);
    let (chain, _) = pki.server_cert();
    let chain = std::fs::read_to_string(chain).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
}

#[tokio::test]
async fn tls11_hello_gets_an_alert() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let answer = tls11_client_hello(upstream.addr())
        .await
        .expect("the server answers a TLS 1.1 hello");
    assert_eq!(
        answer[0], 0x15,
        "expected an alert record, got {answer:02x?}"
    );
    assert_eq!(answer.len(), 7, "one alert record: {answer:02x?}");
    assert_eq!(answer[5], 0x02, "fatal alert: {answer:02x?}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn blackhole_never_answers_and_closed_port_refuses() {
    let pki = TestPki::new();
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let (addr, task) = blackhole().await;
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        client.get(&format!("https://localhost:{}/", addr.port()), None),
    )
    .await;
    assert!(hung.is_err(), "the blackhole must never answer");
    task.abort();

    let closed = closed_port();
    let err = client
        .get(&format!("https://localhost:{}/", closed.port()), None)
        .await
        .expect_err("nothing listens on a closed port");
    assert!(err.to_lowercase().contains("connect"), "{err}");
    // Held: no other socket can take the port while the test uses it.
    let taken = std::net::TcpListener::bind(closed.addr()).expect_err("the port is held");
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse, "{taken}");
}

#[tokio::test]
async fn dropping_the_upstream_stops_it() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let addr = upstream.addr();
    drop(upstream);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => panic!("the upstream still accepts after being dropped"),
        }
    }
}
