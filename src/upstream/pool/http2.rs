//! HTTP/2 connections: shared by many requests at once, up to the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`; the pool opens another connection when one is full.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::super::tls_connect::Stream;

pub(crate) type Sender = http2::SendRequest<Full<Bytes>>;
type Connection = http2::Connection<TokioIo<Stream>, Full<Bytes>, TokioExecutor>;

/// The stream limit assumed for the first connection until the server's SETTINGS arrive
/// (RFC 9113 recommends no less than 100; hyper's default too). Later connections start
/// from the limit the server last announced.
pub(crate) const INITIAL_MAX_STREAMS: usize = 100;

/// One HTTP/2 connection shared by the requests in flight on it.
pub(crate) struct Shared {
    sender: Sender,
    in_flight: AtomicUsize,
    /// The server's current stream limit, as the connection task last saw it.
    max_streams: Arc<AtomicUsize>,
    /// When `in_flight` last fell to 0, in milliseconds of the pool's clock.
    idle_since_ms: AtomicU64,
}

impl Shared {
    /// Takes a stream slot; false when the connection is at the server's limit.
    pub(crate) fn try_acquire(&self) -> bool {
        let max = self.max_streams.load(Ordering::Relaxed);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) < max {
            return true;
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// Gives a stream slot back at `now_ms`.
    pub(crate) fn release(&self, now_ms: u64) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// A handle to send one request with (hyper's handles are cheap clones).
    pub(crate) fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// GOAWAY received or the connection failed: no new request may go on it.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// No request in flight since at least `timeout_ms` before `now_ms`.
    pub(crate) fn idle_for(&self, now_ms: u64, timeout_ms: u64) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && now_ms.saturating_sub(self.idle_since_ms.load(Ordering::Relaxed)) >= timeout_ms
    }
}

/// Starts HTTP/2 on a new connection (ALPN chose `h2`); hyper's connection task is the only
/// task it gets. The connection ends when the last handle to it is dropped. `known` is the
/// stream limit the server last announced on any connection: the new one sends no more
/// streams than that before its own SETTINGS arrive, and updates it.
pub(crate) async fn handshake(
    stream: Stream,
    now_ms: u64,
    known: &Arc<AtomicUsize>,
) -> Result<Shared, hyper::Error> {
    let limit = known.load(Ordering::Relaxed);
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .initial_max_send_streams(limit)
        .handshake(TokioIo::new(stream))
        .await?;
    let max_streams = Arc::new(AtomicUsize::new(limit));
    tokio::spawn(Drive {
        connection,
        max_streams: max_streams.clone(),
        known: known.clone(),
    });
    Ok(Shared {
        sender,
        in_flight: AtomicUsize::new(0),
        max_streams,
        idle_since_ms: AtomicU64::new(now_ms),
    })
}

/// Runs hyper's connection and publishes the server's stream limit after each step, so
/// the pool can see when the connection is full without asking the connection task. The
/// limit shows once this task runs after the server's SETTINGS (hyper reads frames in a
/// task of its own); until then requests beyond it wait in the connection, as HTTP/2
/// queues them, rather than fail.
struct Drive {
    connection: Connection,
    max_streams: Arc<AtomicUsize>,
    known: Arc<AtomicUsize>,
}

impl Future for Drive {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.connection).poll(cx);
        let max = this.connection.current_max_send_streams();
        this.max_streams.store(max, Ordering::Relaxed);
        this.known.store(max, Ordering::Relaxed);
        // Errors reach the requests in flight; the pool sees the connection closed.
        done.map(|_| ())
    }
}
