//! Unfinished bodies over `limits.max_body`: a chunked HTTP/1.1 body or HTTP/2 DATA frames
//! that pass the limit and then stop, the connection left open, get 413 as soon as the limit
//! is passed, not after the body read timeout; nothing is forwarded.

use crate::support;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::{CONNECT_GUARD, WorldExt, read_h1_response, timed_payment};
use support::client::StreamedBody;
use support::load::{ALPN_H1, ALPN_H2, complete, tls_connect};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY};
use support::{HttpVersion, World, moltin_like};

/// `limits.max_body` of the test config.
const MAX_BODY: usize = 16 * 1024;
/// How much of an unfinished body the next two tests send: past the limit by 8 KiB.
const UNFINISHED_BODY: usize = MAX_BODY + 8 * 1024;
/// How soon the 413 must come once the limit was passed: far below the 30 s body read
/// timeout those tests configure, so only a refusal that does not wait for the rest of the
/// body meets it.
const EARLY_413: Duration = Duration::from_secs(3);

/// A chunked body (no Content-Length) that passes `limits.max_body` and then stops without
/// its final chunk, the connection left open: payshim answers 413 in the API format as soon
/// as the limit is passed, not after reading (or waiting for) the rest of the body. The
/// body read timeout (`server.header_read_timeout`) is 30 s here, so a payshim that waited
/// for the end of the body would only answer (400) after 30 s. Nothing is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_chunked_body_over_max_body_is_413_without_waiting_for_the_rest() {
    let world = World::new(moltin_like()).await;
    let config = world.config(&[("header_read_timeout", "\"30s\"")]);
    assert!(config.contains("max_body = \"16KiB\""), "{config}");
    let payshim = Payshim::start(&config).await;
    let mut tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H1, None, CONNECT_GUARD)
        .await
        .expect("TLS");
    let head = format!(
        "POST /v2/orders/{ORDER}/payments HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\nauthorization: Bearer {STOREFRONT_KEY}\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    // 4 KiB chunks up to UNFINISHED_BODY, and never the final `0\r\n\r\n`.
    let mut chunk = b"1000\r\n".to_vec();
    chunk.extend_from_slice(&[b'a'; 4096]);
    chunk.extend_from_slice(b"\r\n");
    let mut sent = 0;
    while sent < UNFINISHED_BODY {
        // payshim may refuse (and close) before it has read all of it.
        if tls.write_all(&chunk).await.is_err() {
            break;
        }
        sent += 4096;
    }
    let _ = tls.flush().await;
    let started = Instant::now();

    let answer = read_h1_response(&mut tls, Duration::from_secs(5)).await;
    let took = started.elapsed();
    let (head, body) = answer.unwrap_or_else(|e| {
        panic!(
            "no answer within 5 s to an unfinished chunked body {sent} bytes long \
             (limit {MAX_BODY}): payshim waits for the rest of the body? {e}"
        )
    });
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("413 body is not JSON ({e}): {body:?}"));
    assert_eq!(json["errors"][0]["status"], 413, "{json}");
    assert_eq!(json["errors"][0]["title"], "Payload Too Large", "{json}");
    assert!(
        took < EARLY_413,
        "413 only {took:?} after the body stopped: payshim waited for the rest of it"
    );
    assert_eq!(world.upstream.count(), 0, "{:?}", world.upstream.requests());
    // The unfinished body stayed open until now.
    drop(tls);

    let (status, _) = timed_payment(&payshim.client(HttpVersion::Http1), &payshim).await;
    assert_eq!(status, 201, "a normal payment after the refused body");
    assert_eq!(world.upstream.count(), 1);
}

/// The HTTP/2 form: DATA frames without `content-length`, past `limits.max_body`, then
/// neither more data nor END_STREAM. 413 in the API format, well before the 30 s body read
/// timeout; nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_h2_body_over_max_body_is_413_without_waiting_for_the_rest() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("header_read_timeout", "\"30s\"")])).await;
    let tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H2, None, CONNECT_GUARD)
        .await
        .expect("TLS");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let req = http::Request::post(payshim.url(&format!("/v2/orders/{ORDER}/payments")))
        .version(http::Version::HTTP_2)
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .header("content-type", "application/json")
        .body(StreamedBody::new(b'a', UNFINISHED_BODY, 4096).left_open())
        .unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(5), complete(sender.send_request(req)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer within 5 s to an unfinished HTTP/2 body {UNFINISHED_BODY} bytes \
                 long (limit {MAX_BODY}): payshim waits for the rest of the body?"
            )
        })
        .unwrap_or_else(|e| panic!("HTTP/2 unfinished oversized body: {e}"));
    let took = started.elapsed();
    assert_eq!(resp.status, 413, "{}", resp.text());
    let json = resp.json();
    assert_eq!(json["errors"][0]["status"], 413, "{json}");
    assert!(took < EARLY_413, "413 only after {took:?}");
    assert_eq!(world.upstream.count(), 0, "{:?}", world.upstream.requests());

    let (status, _) = timed_payment(&payshim.client(HttpVersion::Http2), &payshim).await;
    assert_eq!(status, 201, "a normal payment after the refused body");
    assert_eq!(world.upstream.count(), 1);
}
