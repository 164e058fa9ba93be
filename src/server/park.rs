//! HTTP/1.1 keep-alive connections that hold no HTTP buffers while they wait.
//!
//! hyper's HTTP/1.1 connection allocates an 8 KiB write buffer when it starts and keeps an
//! 8 KiB read buffer reserved while it waits for the next request head, plus a box for the
//! request handler's future: with rustls' 4 KiB record buffer and the task, an idle TLS
//! keep-alive connection cost 36 KiB, nginx 16 (bench/conns.sh, README.md "Architecture").
//! A connection the watchdog finds quiet for a park tick (`Signal::QUIET`: nothing in
//! flight, no request started or finished for up to a second) is parked: its hyper connection is ended without touching
//! the TLS stream (`poll_without_shutdown`), bytes hyper had already read are kept, and the
//! task waits for the socket to become readable holding only the TLS stream. The next
//! request gets a new hyper connection. A busy connection never parks, so back-to-back
//! requests pay nothing for this.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::fair::Fair;
use super::watch::Watched;

/// The TLS stream an HTTP/1.1 connection is served on.
pub(super) type Io = Fair<TlsStream<TcpStream>>;

/// How long closing a connection may wait for the TLS close_notify to be written.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 on `io` until the peer or the watchdog ends the connection, parking it
/// whenever it is quiet.
pub(super) async fn serve_h1<S, B>(
    io: Io,
    builder: &http1::Builder,
    service: S,
    watched: &Arc<Watched>,
    remote: SocketAddr,
) where
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let (mut io, mut service) = (Prefixed::new(io), service);
    loop {
        (io, service) = match serve_until_quiet(io, builder, service, watched, remote).await {
            Some(parked) => parked,
            None => return,
        };
        match wait_for_request(&io, watched, remote).await {
            Wake::Request => {}
            Wake::Stop => return close(io).await,
            Wake::Gone => return,
        }
    }
}

/// Runs one hyper connection until it ends (None) or is parked (the stream and service
/// back, with any bytes hyper read ahead).
async fn serve_until_quiet<S, B>(
    io: Prefixed,
    builder: &http1::Builder,
    service: S,
    watched: &Arc<Watched>,
    remote: SocketAddr,
) -> Option<(Prefixed, S)>
where
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // Boxed: parked, the task keeps none of hyper's state inline.
    let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), service));
    let (mut stopping, mut parking) = (false, false);
    loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                    return None;
                }
                let parts = conn.into_parts();
                let mut io = parts.io.into_inner();
                io.unread(parts.read_buf);
                if parking && !stopping {
                    return Some((io, parts.service));
                }
                close(io).await;
                return None;
            }
            signal = std::future::poll_fn(|cx| watched.poll_signal(cx)) => {
                if signal.stop() && !stopping {
                    stopping = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
                if signal.idle() && watched.still_idle() {
                    // Nothing is in flight, so nothing is lost by dropping the connection,
                    // and a graceful close would wait for a head that may never finish.
                    tracing::debug!(%remote, "closing idle HTTP/1.1 connection");
                    return None;
                }
                if signal.quiet() && !parking && watched.still_idle() {
                    parking = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
            }
        }
    }
}

/// What ends a parked connection's wait.
enum Wake {
    /// The peer sent something (or closed: the next hyper connection finds out).
    Request,
    /// The server is shutting down: close the connection.
    Stop,
    /// Idle for its limit, or the socket failed: drop the connection.
    Gone,
}

/// Parked: waits until the peer sends something or the watchdog ends the connection.
async fn wait_for_request(io: &Prefixed, watched: &Watched, remote: SocketAddr) -> Wake {
    let (tcp, tls) = io.inner.get_ref().get_ref();
    // Bytes read ahead, or plaintext rustls holds: serve them now.
    if !io.prefix.is_empty() || !tls.wants_read() {
        return Wake::Request;
    }
    loop {
        tokio::select! {
            ready = tcp.readable() => {
                return if ready.is_ok() { Wake::Request } else { Wake::Gone };
            }
            signal = std::future::poll_fn(|cx| watched.poll_signal(cx)) => {
                if signal.stop() {
                    return Wake::Stop;
                }
                if signal.idle() && watched.still_idle() {
                    tracing::debug!(%remote, "closing idle HTTP/1.1 connection");
                    return Wake::Gone;
                }
            }
        }
    }
}

/// Ends the TLS session (close_notify) and the stream, as hyper does at the end of a
/// connection, for at most [`SHUTDOWN_LIMIT`].
async fn close(mut io: Prefixed) {
    let _ = tokio::time::timeout(SHUTDOWN_LIMIT, io.shutdown()).await;
}

/// The TLS stream with bytes already read from it (by a previous hyper connection) put
/// back in front.
pub(super) struct Prefixed {
    prefix: Bytes,
    inner: Io,
}

impl Prefixed {
    fn new(inner: Io) -> Prefixed {
        Prefixed {
            prefix: Bytes::new(),
            inner,
        }
    }

    /// Puts `bytes` back: they are read before anything still unread.
    fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.prefix = if self.prefix.is_empty() {
            bytes
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.prefix.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.prefix);
            joined.freeze()
        };
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
