//! Upstream timeouts (issue 2): `upstream.timeout` bounds the whole answer, body included,
//! so an upstream that stalls mid-answer cannot hold a storefront request open; and
//! `upstream.connect_timeout` gives up on an upstream that does not accept the connection
//! long before the total timeout.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;

use support::payshim::{Payshim, STOREFRONT_KEY, base_config, set_key};
use support::{HttpVersion, Reply, TRICKLE_CHUNK, TestPki, Upstream, handler};

const ROUTE: &str = "\n[[routes]]\nmethod = \"GET\"\npath = \"/v2/carts/{id}\"\n";

fn cart(payshim: &Payshim) -> Request<Bytes> {
    Request::get(payshim.url("/v2/carts/cart-1"))
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::new())
        .unwrap()
}

#[tokio::test]
async fn an_upstream_stalling_mid_body_is_cut_off_at_the_timeout() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, handler(|_| Reply::StallAfterHeaders)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(&pki, &upstream.url(), dir.path()) + ROUTE;
    let config = set_key(&config, "upstream", "timeout", Some("\"1s\""));
    let payshim = Payshim::start(&config).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), client.send(cart(&payshim)))
            .await
            .unwrap_or_else(|_| panic!("{version:?}: still waiting after 10 s"));
        // The head (200) went out before the stall; what the client must not get is a
        // complete-looking answer. The body ends in an error once the second is up.
        match result {
            Err(_) => {}
            Ok(resp) => panic!(
                "{version:?}: a stalled body came back as a complete answer: {} ({} bytes)",
                resp.status,
                resp.body.len()
            ),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{version:?}: cut off before the timeout ({:?})",
            started.elapsed()
        );
    }
    payshim.stop().await;
}

/// An answer that streams for longer than `server.header_read_timeout` is not idleness:
/// the connection watchdog counts a request in flight until its answer's body is done, so
/// a slow but complete upstream answer reaches the storefront whole, and the keep-alive
/// connection still serves the next request.
#[tokio::test]
async fn a_slow_answer_is_streamed_whole_past_the_header_read_timeout() {
    const CHUNKS: usize = 10;
    let every = Duration::from_millis(250);
    let pki = TestPki::new();
    let upstream = Upstream::start(
        &pki,
        handler(move |_| Reply::Trickle {
            chunks: CHUNKS,
            every,
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(&pki, &upstream.url(), dir.path()) + ROUTE;
    let config = set_key(&config, "server", "header_read_timeout", Some("\"1s\""));
    let config = set_key(&config, "upstream", "timeout", Some("\"10s\""));
    let payshim = Payshim::start(&config).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        for round in 0..2 {
            let started = Instant::now();
            let resp = tokio::time::timeout(Duration::from_secs(10), client.send(cart(&payshim)))
                .await
                .unwrap_or_else(|_| panic!("{version:?}: still waiting after 10 s"))
                .unwrap_or_else(|e| panic!("{version:?} round {round}: answer cut off: {e}"));
            assert_eq!(resp.status, 200, "{version:?}");
            assert_eq!(
                resp.body.as_ref(),
                TRICKLE_CHUNK.repeat(CHUNKS).as_slice(),
                "{version:?}"
            );
            assert!(
                started.elapsed() >= every * CHUNKS as u32,
                "{version:?}: the answer did not trickle ({:?})",
                started.elapsed()
            );
        }
    }
    payshim.stop().await;
}

/// A listener whose backlog is full drops further SYNs, so a connect to it hangs: the
/// loopback stand-in for an upstream host that does not answer.
async fn unanswered_port() -> (SocketAddr, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fill = Vec::new();
    // Fill the accept queue (never accepted); a connect that still completes at once
    // means there is room left.
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fill.push(stream),
            _ => break,
        }
    }
    std::mem::forget(listener);
    (addr, fill)
}

#[tokio::test]
async fn an_upstream_that_never_accepts_gives_502_after_the_connect_timeout() {
    let pki = TestPki::new();
    let (addr, _held) = unanswered_port().await;
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(
        &pki,
        &format!("https://127.0.0.1:{}", addr.port()),
        dir.path(),
    ) + ROUTE;
    let config = set_key(&config, "upstream", "connect_timeout", Some("\"300ms\""));
    let config = set_key(&config, "upstream", "timeout", Some("\"30s\""));
    let payshim = Payshim::start(&config).await;
    let client = payshim.client(HttpVersion::Http1);
    let started = Instant::now();
    let resp = client.send(cart(&payshim)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(
        took < Duration::from_secs(5),
        "502 took {took:?}: the connect timeout (300 ms) did not apply"
    );
    payshim.stop().await;
}
