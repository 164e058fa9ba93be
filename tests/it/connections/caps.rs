//! Connection caps: past `server.max_connections_per_ip` a connection from that address is
//! refused while other addresses are served; past `server.max_connections` a connection
//! waits until one closes.

use crate::support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::Method;

use super::{CONNECT_GUARD, WorldExt};
use support::load::{ALPN_H1, ALPN_H2, complete, conn_request, h1_over, h2_over, tls_connect};
use support::payshim::Payshim;
use support::{HttpVersion, World, moltin_like};

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
