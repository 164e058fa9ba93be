//! Slow and silent clients: slowloris on the request head, a stalled body, a silent or
//! trickled TLS handshake, and their HTTP/2 forms are cut off after
//! `server.header_read_timeout` while normal clients keep being served.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CONNECT_GUARD, WorldExt, assert_cut_off, timed_payment};
use support::load::{ALPN_H1, ALPN_H2, percentile, tcp_connect, tls_connect, wait_closed};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, admin_get, payment_body};
use support::{HttpVersion, World, moltin_like};

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
