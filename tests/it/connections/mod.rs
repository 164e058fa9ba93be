//! Connection-level protection of the public listener (issue 5, item 5), end to end with a
//! real payshim: slowloris and silent clients are cut off after `server.header_read_timeout`
//! while normal clients keep being served; idle HTTP/1.1 keep-alive connections are closed;
//! the per-address and global connection caps; the header size cap; the HTTP/2 concurrent
//! stream cap.
//!
//! Every test starts its own upstream double and payshim on kernel-chosen ports. All test
//! traffic comes from loopback; a second client address is 127.0.0.2 (Linux routes all of
//! 127.0.0.0/8 to `lo`), bound before connecting.
//!
//! One topic per file: slow and silent clients (`slow_clients`), unfinished bodies over
//! `limits.max_body` (`unfinished_bodies`), idle and parked HTTP/1.1 keep-alive connections
//! (`keep_alive`), the connection caps (`caps`), the header size cap and the HTTP/2 stream
//! cap (`headers_and_streams`). This file holds what they share.

use crate::support;

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use support::load::payment_to;
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, payment_body, set_key};
use support::{TestClient, World};

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

mod caps;
mod headers_and_streams;
mod keep_alive;
mod slow_clients;
mod unfinished_bodies;
