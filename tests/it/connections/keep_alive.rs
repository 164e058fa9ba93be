//! HTTP/1.1 keep-alive connections: an idle one is closed after
//! `server.header_read_timeout`; a quiet one parks and is served again, keeping the bytes
//! it had read ahead.

use crate::support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CONNECT_GUARD, WorldExt, assert_cut_off, read_h1_response};
use support::load::{ALPN_H1, tls_connect, wait_closed};
use support::payshim::Payshim;
use support::{World, moltin_like};

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
