//! The running double: the listener, the accepted connections (TLS or plain, HTTP/1.1 or
//! HTTP/2) and the shared state every request is recorded in.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::reply::{Handler, Recorded};
use super::respond::handle;
use crate::support::pki::TestPki;

pub(super) struct State {
    /// Connections accepted, and those of them that have ended.
    accepted: AtomicUsize,
    closed: AtomicUsize,
    pub(super) requests: Mutex<Vec<Recorded>>,
    pub(super) handler: Mutex<Handler>,
    pub(super) count: watch::Sender<usize>,
}

/// A running double. Dropping it stops the server (listener and connections).
pub struct Upstream {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// TLS (a certificate from `pki.server_cert()`), HTTP/1.1 and HTTP/2 (ALPN), on
    /// 127.0.0.1:0.
    pub async fn start(pki: &TestPki, handler: Handler) -> Upstream {
        Self::start_with_tls(Arc::new(pki.server_config(false)), handler).await
    }

    /// TLS with a caller-made rustls config (e.g. `pki.server_config(true)` for mTLS).
    pub async fn start_with_tls(config: Arc<rustls::ServerConfig>, handler: Handler) -> Upstream {
        Self::spawn(Some(TlsAcceptor::from(config)), handler).await
    }

    /// Plain HTTP (no TLS): HTTP/1.1, and HTTP/2 with prior knowledge.
    pub async fn start_plain(handler: Handler) -> Upstream {
        Self::spawn(None, handler).await
    }

    async fn spawn(acceptor: Option<TlsAcceptor>, handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream double");
        let addr = listener.local_addr().expect("upstream local addr");
        let state = Arc::new(State {
            accepted: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            handler: Mutex::new(handler),
            count: watch::channel(0).0,
        });
        let tls = acceptor.is_some();
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Upstream {
            addr,
            tls,
            state,
            task,
        }
    }

    /// `https://localhost:PORT` (the certificate is valid for localhost and 127.0.0.1);
    /// `http://127.0.0.1:PORT` for the plain variant.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://127.0.0.1:{}", self.addr.port())
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Accepted connections that have ended (either side closed them).
    pub fn closed(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// Replaces the handler for requests that arrive from now on.
    pub fn set_handler(&self, handler: Handler) {
        *self.state.handler.lock().unwrap() = handler;
    }

    /// Waits until at least `n` requests were recorded; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.state.count.subscribe();
        let reached = tokio::time::timeout(timeout, async move {
            rx.wait_for(|count| *count >= n).await.is_ok()
        })
        .await;
        matches!(reached, Ok(true))
    }
}

async fn accept_loop(listener: TcpListener, acceptor: Option<TlsAcceptor>, state: Arc<State>) {
    // Connections live in the JoinSet, so aborting this task (dropping `Upstream`) drops them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    state.accepted.fetch_add(1, Ordering::SeqCst);
                    let state = state.clone();
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        serve_connection(tcp, acceptor, state.clone()).await;
                        state.closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Per-connection control shared by the connection task and its request handlers.
pub(super) struct ConnControl {
    /// Drop the connection now.
    pub(super) kill: Notify,
    /// When dropped, close abortively (SO_LINGER 0: RST instead of FIN).
    pub(super) abortive: AtomicBool,
}

/// The TCP stream, closing abortively on drop when asked to.
struct Tcp {
    inner: TcpStream,
    control: Arc<ConnControl>,
}

impl Drop for Tcp {
    fn drop(&mut self) {
        if self.control.abortive.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: Option<TlsAcceptor>, state: Arc<State>) {
    let control = Arc::new(ConnControl {
        kill: Notify::new(),
        abortive: AtomicBool::new(false),
    });
    let tcp = Tcp {
        inner: tcp,
        control: control.clone(),
    };
    match acceptor {
        Some(acceptor) => {
            // A failed handshake (e.g. a TLS 1.1 hello) has already been answered with an
            // alert by tokio-rustls; nothing else to do.
            if let Ok(tls) = acceptor.accept(tcp).await {
                serve_http(tls, state, control).await;
            }
        }
        None => serve_http(tcp, state, control).await,
    }
}

async fn serve_http<S>(io: S, state: Arc<State>, control: Arc<ConnControl>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_control = control.clone();
    let service = service_fn(move |req| handle(req, state.clone(), service_control.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = connection => {}
        _ = control.kill.notified() => {} // dropping `connection` drops the socket
    }
}
