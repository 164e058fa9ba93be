//! Header size and HTTP/2 streams: a head over `server.max_header_size` is refused and
//! payshim keeps serving; HTTP/2 streams beyond `server.max_h2_streams` are queued, not
//! refused.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CONNECT_GUARD, WorldExt, timed_payment};
use support::load::{ALPN_H1, ALPN_H2, complete, conn_request, h2_over, tls_connect};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, payment_body};
use support::{Handler, HttpVersion, World, handler, moltin_like};

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
