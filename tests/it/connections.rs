//! Connection-level protection of the public listener (issue 5, item 5), end to end with a
//! real payshim: slowloris and silent clients are cut off after `server.header_read_timeout`
//! while normal clients keep being served; idle HTTP/1.1 keep-alive connections are closed;
//! the per-address and global connection caps; the header size cap; the HTTP/2 concurrent
//! stream cap.
//!
//! Every test starts its own upstream double and payshim on kernel-chosen ports. All test
//! traffic comes from loopback; a second client address is 127.0.0.2 (Linux routes all of
//! 127.0.0.0/8 to `lo`), bound before connecting.

use crate::support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::client::StreamedBody;
use support::load::{
    ALPN_H1, ALPN_H2, complete, conn_request, h1_over, h2_over, payment_to, percentile,
    tcp_connect, tls_connect, wait_closed,
};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, admin_get, payment_body, set_key};
use support::{Handler, HttpVersion, TestClient, World, handler, moltin_like};

/// How long a TLS connection attempt may take in these tests before it counts as failed.
const CONNECT_GUARD: Duration = Duration::from_secs(5);

/// What this file adds to `World` (a trait: other files add their own).
trait WorldExt {
    fn config(&self, server: &[(&str, &str)]) -> String;
}

impl WorldExt for World {
    /// `base_config` with `server` keys set (TOML literals).
    fn config(&self, server: &[(&str, &str)]) -> String {
        let mut toml = self.base_config();
        for (key, value) in server {
            toml = set_key(&toml, "server", key, Some(value));
        }
        toml
    }
}

/// One payment through `client`; (status, latency).
async fn timed_payment(client: &TestClient, payshim: &Payshim) -> (u16, Duration) {
    let started = Instant::now();
    let req = payment_to(&payshim.url(""), ORDER, STOREFRONT_KEY, &payment_body());
    match client.send(req).await {
        Ok(resp) => (resp.status, started.elapsed()),
        Err(e) => panic!("a normal client's payment failed: {e}"),
    }
}

/// `GET /not-a-route` over an established HTTP/1.1 connection: payshim answers 404 itself.
async fn h1_get_404<S>(io: S, port: u16) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut sender = h1_over(io).await?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = conn_request(
        HttpVersion::Http1,
        port,
        Method::GET,
        "/not-a-route",
        &[],
        "",
    );
    let resp = complete(sender.send_request(req)).await?;
    Ok(resp.status)
}

/// The time it took the server to close `stream`, asserted to be about `timeout` (between
/// 90% of it and `timeout + 2 s`).
#[track_caller]
fn assert_cut_off(what: &str, took: Result<Duration, ()>, timeout: Duration) -> Duration {
    let took = took.unwrap_or_else(|()| panic!("{what}: still open after 5 s"));
    assert!(
        took >= timeout.mul_f64(0.9) && took <= timeout + Duration::from_secs(2),
        "{what}: closed after {took:?}, expected about {timeout:?}"
    );
    took
}

// ---------------------------------------------------------------------------------------
// Slow and silent clients.

/// A request head that never ends: the bytes of a payment request line and headers, then a
/// header value that goes on forever.
fn endless_head(i: usize) -> u8 {
    const HEAD: &[u8] =
        b"POST /v2/orders/7d3c1a52-9e4f-4b8a-8c6d-2e5f4a3b1c0d/payments HTTP/1.1\r\n\
        host: localhost\r\ncontent-type: application/json\r\nx-slow: ";
    HEAD.get(i).copied().unwrap_or(b'a')
}

/// One slowloris connection: TLS, then one byte of a never-ending head every 300 ms. Returns
/// how long after the handshake payshim closed it (`Err` with the bytes sent if it was still
/// open after `limit`).
async fn slowloris(addr: SocketAddr, ca_pem: String, limit: Duration) -> Result<Duration, usize> {
    let mut tls = tls_connect(addr, &ca_pem, ALPN_H1, None, CONNECT_GUARD)
        .await
        .expect("the slowloris client completes TLS");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    loop {
        if started.elapsed() > limit {
            return Err(sent);
        }
        tokio::select! {
            read = tls.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(started.elapsed()),
                // An error answer (if any) before the close.
                Ok(_) => {}
            },
            _ = tick.tick() => {
                let byte = [endless_head(sent)];
                if tls.write_all(&byte).await.is_err() || tls.flush().await.is_err() {
                    return Ok(started.elapsed());
                }
                sent += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_while_normal_clients_are_served() {
    const ATTACKERS: usize = 16;
    let timeout = Duration::from_secs(1);
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("header_read_timeout", "\"1s\"")])).await;
    let h1 = payshim.client(HttpVersion::Http1);
    let h2 = payshim.client(HttpVersion::Http2);

    // Normal latency before the attack.
    let mut baseline = Vec::new();
    for _ in 0..10 {
        for client in [&h1, &h2] {
            let (status, took) = timed_payment(client, &payshim).await;
            assert_eq!(status, 201);
            baseline.push(took);
        }
    }

    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            tokio::spawn(slowloris(
                payshim.addr,
                payshim.ca_pem.clone(),
                Duration::from_secs(5),
            ))
        })
        .collect();
    // Normal clients (HTTP/1.1 keep-alive and HTTP/2) pay every 100 ms throughout the
    // attack, until every attacker is gone.
    let mut during = Vec::new();
    let attack_started = Instant::now();
    while attackers.iter().any(|a| !a.is_finished()) || attack_started.elapsed() < timeout {
        for client in [&h1, &h2] {
            let (status, took) = timed_payment(client, &payshim).await;
            assert_eq!(status, 201, "a normal client was refused during the attack");
            during.push(took);
        }
        assert!(
            attack_started.elapsed() < Duration::from_secs(10),
            "attack still going after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut cut_offs = Vec::new();
    for (i, attacker) in attackers.into_iter().enumerate() {
        let took = match attacker.await.unwrap() {
            Ok(took) => took,
            Err(sent) => panic!("slowloris {i} still connected after 5 s ({sent} bytes sent)"),
        };
        cut_offs.push(assert_cut_off(&format!("slowloris {i}"), Ok(took), timeout));
    }
    let (b50, bmax) = (
        percentile(&mut baseline, 50),
        percentile(&mut baseline, 100),
    );
    let (d50, d99, dmax) = (
        percentile(&mut during, 50),
        percentile(&mut during, 99),
        percentile(&mut during, 100),
    );
    eprintln!(
        "slowloris: {ATTACKERS} attackers cut off after {:?}..{:?} (header_read_timeout 1s); \
         normal payments before: p50 {b50:?} max {bmax:?}; during ({} requests): p50 {d50:?} \
         p99 {d99:?} max {dmax:?}",
        percentile(&mut cut_offs, 0),
        percentile(&mut cut_offs, 100),
        during.len()
    );
    assert!(
        dmax < Duration::from_secs(1),
        "a normal payment took {dmax:?} during the attack"
    );
}

/// A complete request head announcing a body, then only part of the body and silence: the
/// body read is bounded by `server.header_read_timeout` too. payshim answers 400 in the API
/// format and nothing reaches the upstream; a normal payment is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_body_gets_400_and_nothing_is_forwarded() {
    let timeout = Duration::from_secs(1);
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("header_read_timeout", "\"1s\"")])).await;
    let body = payment_body();
    let head = format!(
        "POST /v2/orders/{ORDER}/payments HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\nauthorization: Bearer {STOREFRONT_KEY}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let mut tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H1, None, CONNECT_GUARD)
        .await
        .expect("TLS");
    tls.write_all(head.as_bytes()).await.unwrap();
    // A quarter of the body: the part before the card number, so no card data is sent.
    tls.write_all(&body.as_bytes()[..body.len() / 4])
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();

    let (status, _) = timed_payment(&payshim.client(HttpVersion::Http1), &payshim).await;
    assert_eq!(status, 201, "a normal payment while one body stalls");

    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(read.is_ok(), "no answer 5 s after the body stalled");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "answer: {text}");
    assert!(
        text.contains("\"errors\"") && text.contains("request body could not be read"),
        "answer: {text}"
    );
    assert!(
        took >= timeout.mul_f64(0.9) && took <= timeout + Duration::from_secs(2),
        "answered after {took:?}, expected about {timeout:?}"
    );
    // Only the normal payment reached the upstream.
    assert_eq!(world.upstream.count(), 1, "{:?}", world.upstream.requests());
}

/// Reads one HTTP/1.1 response, head and `Content-Length` body, within `limit`. Err with
/// what did arrive if the stream ended, failed or went quiet before the response was whole.
async fn read_h1_response<S>(stream: &mut S, limit: Duration) -> Result<(String, Vec<u8>), String>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).into_owned();
                let length = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                });
                let body = &received[end + 4..];
                if let Some(length) = length
                    && body.len() >= length
                {
                    return Ok((head, body[..length].to_vec()));
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) => return Err("closed".to_string()),
                Err(e) => return Err(e.to_string()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("nothing complete within {limit:?}")));
    read.map_err(|why| format!("{why}; received: {:?}", String::from_utf8_lossy(&received)))
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_handshakes_are_cut_off() {
    let timeout = Duration::from_secs(1);
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("header_read_timeout", "\"1s\"")])).await;

    // TCP only, never a ClientHello.
    let mut silent = tcp_connect(payshim.addr, None).await.unwrap();
    let silent_task =
        tokio::spawn(async move { wait_closed(&mut silent, Duration::from_secs(5)).await });
    // A ClientHello trickled one byte every 300 ms.
    let mut trickle = tcp_connect(payshim.addr, None).await.unwrap();
    let hello = support::client::tls11_hello_bytes("localhost");
    let trickle_task = tokio::spawn(async move {
        let started = Instant::now();
        let mut buf = [0u8; 512];
        for byte in hello.iter().cycle() {
            tokio::select! {
                read = trickle.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return Ok(started.elapsed()),
                    Ok(_) => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    if trickle.write_all(&[*byte]).await.is_err() {
                        return Ok(started.elapsed());
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(5) {
                return Err(());
            }
        }
        Err(())
    });
    let silent = assert_cut_off(
        "TCP without ClientHello",
        silent_task.await.unwrap(),
        timeout,
    );
    let trickle = assert_cut_off("trickled ClientHello", trickle_task.await.unwrap(), timeout);
    eprintln!("no ClientHello: closed after {silent:?}; trickled ClientHello: {trickle:?}");

    // payshim still serves.
    let (status, _) = timed_payment(&payshim.client(HttpVersion::Http1), &payshim).await;
    assert_eq!(status, 201);
    let (_, metrics) = admin_get(payshim.admin, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("payshim_refused_connections") && !l.ends_with(" 0")),
        "the cut-off handshakes are counted:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_keep_alive_connection_is_closed() {
    let timeout = Duration::from_secs(1);
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("header_read_timeout", "\"1s\"")])).await;
    let mut tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H1, None, CONNECT_GUARD)
        .await
        .unwrap();
    tls.write_all(b"GET /not-a-route HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    // Read the whole 404 (head and Content-Length body): the connection is then idle.
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= length {
                assert!(head.starts_with("HTTP/1.1 404"), "{head}");
                assert!(
                    !head.to_ascii_lowercase().contains("connection: close"),
                    "{head}"
                );
                break Instant::now();
            }
        }
    };
    let took = wait_closed(&mut tls, Duration::from_secs(5))
        .await
        .map(|_| answered.elapsed());
    let took = assert_cut_off("idle keep-alive connection", took, timeout);
    eprintln!("idle HTTP/1.1 keep-alive connection closed {took:?} after the last answer");
}

/// A quiet HTTP/1.1 keep-alive connection lets go of its HTTP buffers (it parks, once the
/// watchdog finds it quiet for a tick: 1 s here) and is served again when the next request
/// comes: a request head split by a pause, whose first half payshim had already read when
/// the connection parked (those bytes must be kept), and a whole request after a pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_http1_connection_keeps_serving_and_keeps_bytes_read_ahead() {
    let pause = Duration::from_millis(2_500);
    let world = World::new(moltin_like()).await;
    // Closed when idle for 8 s: longer than both pauses, which are not activity.
    let payshim = Payshim::start(&world.config(&[("header_read_timeout", "\"8s\"")])).await;
    let mut tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H1, None, CONNECT_GUARD)
        .await
        .unwrap();
    let request = b"GET /not-a-route HTTP/1.1\r\nhost: localhost\r\nx-test: parked\r\n\r\n";
    let (first, second) = request.split_at(30);
    // (what is sent, then the pause, then the rest: each must get its 404)
    let steps: [(&str, &[u8], &[u8]); 3] = [
        ("first request", request, b""),
        ("head split by a pause", first, second),
        ("request after a pause", b"", request),
    ];
    for (step, before, after) in steps {
        tls.write_all(before).await.unwrap();
        tls.flush().await.unwrap();
        if !after.is_empty() {
            tokio::time::sleep(pause).await;
            tls.write_all(after).await.unwrap();
            tls.flush().await.unwrap();
        }
        let (head, _) = read_h1_response(&mut tls, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        assert!(head.starts_with("HTTP/1.1 404"), "{step}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{step}: {head}"
        );
    }
}

/// The HTTP/2 forms of slowloris: a client (ALPN h2) that completes TLS and then sends
/// nothing, not even the connection preface; and one that sends the preface, SETTINGS and a
/// HEADERS frame without END_HEADERS that it never continues. Both must be cut off after
/// `header_read_timeout` like their HTTP/1.1 counterpart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_or_slow_http2_connection_is_cut_off() {
    let timeout = Duration::from_secs(1);
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("header_read_timeout", "\"1s\"")])).await;
    let mut silent = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H2, None, CONNECT_GUARD)
        .await
        .unwrap();
    let mut partial = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H2, None, CONNECT_GUARD)
        .await
        .unwrap();
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS (type 4), empty.
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // HEADERS (type 1) on stream 1, one HPACK byte (:method GET), flags 0: no END_HEADERS.
    frames.extend_from_slice(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]);
    partial.write_all(&frames).await.unwrap();
    partial.flush().await.unwrap();
    let (silent, partial) = tokio::join!(
        wait_closed(&mut silent, Duration::from_secs(5)),
        wait_closed(&mut partial, Duration::from_secs(5))
    );
    let silent = assert_cut_off("HTTP/2 connection without a preface", silent, timeout);
    let partial = assert_cut_off("HTTP/2 HEADERS never finished", partial, timeout);
    eprintln!("silent HTTP/2 connection closed after {silent:?}, unfinished HEADERS {partial:?}");
}

// ---------------------------------------------------------------------------------------
// Connection caps.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_refuses_the_fifth_connection_only_from_that_address() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[
        ("max_connections_per_ip", "4"),
        ("header_read_timeout", "\"10s\""),
    ]))
    .await;
    let port = payshim.addr.port();
    let localhost: IpAddr = [127, 0, 0, 1].into();
    let second: IpAddr = [127, 0, 0, 2].into();

    // Four idle TLS connections from 127.0.0.1.
    let mut held = Vec::new();
    for i in 0..4 {
        let tls = tls_connect(
            payshim.addr,
            &payshim.ca_pem,
            ALPN_H1,
            Some(localhost),
            CONNECT_GUARD,
        )
        .await
        .unwrap_or_else(|e| panic!("connection {i} within the cap: {e}"));
        held.push(tls);
    }
    // A fifth from the same address is closed without a handshake (let alone an answer).
    for attempt in 0..2 {
        let refused = tls_connect(
            payshim.addr,
            &payshim.ca_pem,
            ALPN_H1,
            Some(localhost),
            CONNECT_GUARD,
        )
        .await;
        match refused {
            Err(e) => assert_ne!(
                e.kind(),
                std::io::ErrorKind::TimedOut,
                "attempt {attempt}: refused by a close, not left hanging"
            ),
            Ok(_) => panic!("attempt {attempt}: a fifth connection from 127.0.0.1 was accepted"),
        }
    }
    // Another address is still served.
    let tls = tls_connect(
        payshim.addr,
        &payshim.ca_pem,
        ALPN_H1,
        Some(second),
        CONNECT_GUARD,
    )
    .await
    .expect("127.0.0.2 is not capped by 127.0.0.1's connections");
    assert_eq!(h1_get_404(tls, port).await, Ok(404));

    // As soon as one of the four closes, 127.0.0.1 gets a slot again.
    drop(held.pop());
    let closed = Instant::now();
    let tls = loop {
        match tls_connect(
            payshim.addr,
            &payshim.ca_pem,
            ALPN_H1,
            Some(localhost),
            CONNECT_GUARD,
        )
        .await
        {
            Ok(tls) => break tls,
            Err(e) => assert!(
                closed.elapsed() < Duration::from_secs(2),
                "no slot 2 s after a connection closed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reopened = closed.elapsed();
    assert_eq!(h1_get_404(tls, port).await, Ok(404));
    eprintln!("per-address cap: a slot was free again {reopened:?} after a close");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_cap_queues_the_fourth_connection_until_one_closes() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(
        &world.config(&[("max_connections", "3"), ("header_read_timeout", "\"10s\"")]),
    )
    .await;
    let port = payshim.addr.port();
    let mut held = Vec::new();
    for i in 0..3 {
        let tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H1, None, CONNECT_GUARD)
            .await
            .unwrap_or_else(|e| panic!("connection {i} within the cap: {e}"));
        held.push(tls);
    }
    let (addr, ca) = (payshim.addr, payshim.ca_pem.clone());
    let fourth = tokio::spawn(async move {
        let tls = tls_connect(addr, &ca, ALPN_H2, None, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        let served = Instant::now();
        let mut sender = h2_over(tls).await?;
        let req = conn_request(
            HttpVersion::Http2,
            port,
            Method::GET,
            "/not-a-route",
            &[],
            "",
        );
        let resp = complete(sender.send_request(req)).await?;
        Ok::<_, String>((resp.status, served))
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !fourth.is_finished(),
        "the fourth connection was served while three were open: {:?}",
        fourth.await
    );
    let first = held.remove(0);
    drop(first);
    let closed = Instant::now();
    let (status, served) = tokio::time::timeout(Duration::from_secs(3), fourth)
        .await
        .expect("the fourth connection is served within 3 s of a close")
        .unwrap()
        .expect("the fourth connection completes");
    assert_eq!(status, 404);
    eprintln!(
        "global cap: the waiting connection was accepted {:?} after a close",
        served.saturating_duration_since(closed)
    );
    drop(held);
}

// ---------------------------------------------------------------------------------------
// Header size and HTTP/2 streams.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_is_refused_and_payshim_keeps_serving() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config(&[("max_header_size", "\"16KiB\"")])).await;
    let big = "a".repeat(64 * 1024);

    // HTTP/1.1, written raw: 431, or a close without an answer.
    let mut tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H1, None, CONNECT_GUARD)
        .await
        .unwrap();
    let head = format!(
        "POST /v2/orders/{ORDER}/payments HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {STOREFRONT_KEY}\r\ncontent-type: application/json\r\n\
         x-big: {big}\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    // The server may close before it has read everything: a failed write is expected.
    let _ = tls.write_all(head.as_bytes()).await;
    let _ = tls.flush().await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection is closed after the oversized head"
    );
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "HTTP/1.1 oversized header: {answer}"
    );
    eprintln!(
        "HTTP/1.1 64 KiB header: {}",
        answer.lines().next().unwrap_or("closed without an answer")
    );

    // HTTP/2: 431 or a refused stream / connection error.
    let tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H2, None, CONNECT_GUARD)
        .await
        .unwrap();
    let mut sender = h2_over(tls).await.unwrap();
    let req = conn_request(
        HttpVersion::Http2,
        payshim.addr.port(),
        Method::POST,
        &format!("/v2/orders/{ORDER}/payments"),
        &[
            ("authorization", &format!("Bearer {STOREFRONT_KEY}")),
            ("content-type", "application/json"),
            ("x-big", &big),
        ],
        &payment_body(),
    );
    match complete(sender.send_request(req)).await {
        Ok(resp) => {
            assert_eq!(resp.status, 431, "HTTP/2 oversized header");
            eprintln!("HTTP/2 64 KiB header: 431");
        }
        Err(e) => eprintln!("HTTP/2 64 KiB header: refused ({e})"),
    }
    assert_eq!(world.upstream.count(), 0, "nothing forwarded");

    // payshim keeps serving, both protocols.
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let (status, _) = timed_payment(&payshim.client(version), &payshim).await;
        assert_eq!(status, 201, "{version:?} after the oversized headers");
    }
}

/// Arrival times of upstream requests, and the payments handler delaying each by `delay`.
fn delayed_recording(delay: Duration) -> (Handler, Arc<Mutex<Vec<Instant>>>) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let inner = moltin_like();
    let handler = handler(move |req| {
        seen.lock().unwrap().push(Instant::now());
        inner(req).delayed(delay)
    });
    (handler, arrivals)
}

/// The most requests in flight at the upstream at once: each lasts `delay`, so requests that
/// arrived within less than `delay` of each other overlapped.
fn max_in_flight(arrivals: &[Instant], delay: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    let window = delay.mul_f64(0.9);
    (0..sorted.len())
        .map(|i| {
            sorted[..=i]
                .iter()
                .filter(|a| sorted[i].duration_since(**a) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Five concurrent payments on one HTTP/2 connection to a payshim with `max_h2_streams`;
/// (elapsed, most in flight upstream at once).
async fn five_streams_on_one_connection(max_streams: u32) -> (Duration, usize) {
    const STREAMS: usize = 5;
    let delay = Duration::from_secs(1);
    let (handler, arrivals) = delayed_recording(delay);
    let world = World::new(handler).await;
    let payshim =
        Payshim::start(&world.config(&[("max_h2_streams", max_streams.to_string().as_str())]))
            .await;
    let port = payshim.addr.port();
    let tls = tls_connect(payshim.addr, &payshim.ca_pem, ALPN_H2, None, CONNECT_GUARD)
        .await
        .unwrap();
    let sender = h2_over(tls).await.unwrap();
    // One exchange first, so the server's SETTINGS are known before the burst.
    let warm = conn_request(
        HttpVersion::Http2,
        port,
        Method::GET,
        "/not-a-route",
        &[],
        "",
    );
    let resp = complete(sender.clone().send_request(warm)).await.unwrap();
    assert_eq!(resp.status, 404);

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let mut sender = sender.clone();
        tasks.spawn(async move {
            sender.ready().await.map_err(|e| e.to_string())?;
            let req = conn_request(
                HttpVersion::Http2,
                port,
                Method::POST,
                &format!("/v2/orders/{ORDER}/payments"),
                &[
                    ("authorization", &format!("Bearer {STOREFRONT_KEY}")),
                    ("content-type", "application/json"),
                ],
                &payment_body(),
            );
            complete(sender.send_request(req)).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let resp = done
            .unwrap()
            .unwrap_or_else(|e| panic!("max_h2_streams {max_streams}: a stream failed: {e}"));
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    let took = started.elapsed();
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), STREAMS);
    (took, max_in_flight(&arrivals, delay))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_beyond_the_cap_are_queued_not_refused() {
    // The capped connection and, as a control of the measurement, an uncapped one.
    let (capped, uncapped) = tokio::join!(
        five_streams_on_one_connection(2),
        five_streams_on_one_connection(100)
    );
    eprintln!(
        "HTTP/2 streams: max_h2_streams 2: 5 requests in {:?}, at most {} in flight upstream; \
         max_h2_streams 100: {:?}, at most {}",
        capped.0, capped.1, uncapped.0, uncapped.1
    );
    assert_eq!(uncapped.1, 5, "control: without the cap all five overlap");
    assert_eq!(capped.1, 2, "never more than max_h2_streams in flight");
    assert!(
        capped.0 >= Duration::from_millis(2900),
        "5 requests of 1 s, 2 at a time, take 3 rounds: {:?}",
        capped.0
    );
}
