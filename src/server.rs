//! The public listener: accept, TLS handshake, HTTP/1.1 or HTTP/2, graceful shutdown.
//!
//! Connection-level protection lives here: a cap on open connections (excess ones wait in
//! the kernel backlog), a deadline for the TLS handshake, hyper's header read timeout
//! (slowloris; it also bounds keep-alive idle time on HTTP/1.1), a header size cap and a
//! cap on concurrent HTTP/2 streams. The protocol is chosen by ALPN, so no connection sits
//! in protocol detection without a timer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::proxy::Proxy;
use crate::tls::PeerIdentity;

/// What the handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// Names from a verified client certificate (mTLS), if one was presented.
    pub peer: Option<PeerIdentity>,
}

/// Protocol builders, made once and shared by every connection.
struct Protocols {
    h1: Builder<TokioExecutor>,
    h2: Builder<TokioExecutor>,
}

impl Protocols {
    fn new(settings: &ServerConfig) -> Protocols {
        let mut h1 = Builder::new(TokioExecutor::new()).http1_only();
        h1.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .keep_alive(true)
            // Head and body copied into one buffer: rustls encrypts a copy anyway, and
            // one flat write measured +1.4 % against vectored ones (bench/, side by side).
            .writev(false)
            .max_buf_size(settings.max_header_size.max(8192));
        let mut h2 = Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_h2_streams)
            .max_header_list_size(settings.max_header_size as u32)
            .keep_alive_interval(Some(settings.idle_timeout))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols { h1, h2 }
    }
}

/// Accepts connections until `shutdown` flips, then lets in-flight requests finish for up
/// to `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    settings: &ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let protocols = Arc::new(Protocols::new(settings));
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let per_ip = Arc::new(PerIp::new(settings.max_connections_per_ip));
    let limits = ConnLimits {
        handshake: settings.header_read_timeout,
        first_request: settings.header_read_timeout,
        idle: settings.idle_timeout,
    };
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(ip_slot) = per_ip.clone().try_acquire(remote.ip()) else {
            tracing::debug!(%remote, "connection refused: too many from this address");
            proxy.metrics().connections_refused.inc();
            continue;
        };
        let (acceptor, proxy, protocols) = (acceptor.clone(), proxy.clone(), protocols.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _slots = (permit, ip_slot);
            proxy.metrics().connections.inc();
            let _ = tcp.set_nodelay(true);
            if let Some(conn) = handshake(&acceptor, tcp, remote, limits.handshake, &proxy).await {
                serve_connection(conn, &protocols, proxy.clone(), limits, stop).await;
            }
            proxy.metrics().connections.dec();
        });
    }
    drop(listener);
    let open = settings.max_connections - slots.available_permits();
    tracing::info!(
        open_connections = open,
        "shutting down: no longer accepting"
    );
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
}

/// Time limits of one connection.
#[derive(Clone, Copy)]
struct ConnLimits {
    handshake: Duration,
    /// HTTP/2: the first request must start within this (HTTP/1.1: hyper's header read
    /// timeout does the same job).
    first_request: Duration,
    /// HTTP/2: a connection with no open stream for this long is closed.
    idle: Duration,
}

/// When the last request on a connection finished, and how many are open: HTTP/2 has no
/// header read timeout in hyper, so payshim closes silent or idle HTTP/2 connections
/// itself (a client that never finishes a request's headers is idle too).
struct Activity {
    started: Instant,
    open: AtomicUsize,
    last_done_ms: AtomicU64,
    any: AtomicBool,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

/// Serves HTTP on an established TLS connection until it ends, the server shuts down
/// (graceful: in-flight requests finish) or, for HTTP/2, it stays idle too long.
async fn serve_connection(
    (tls, info): TlsConn,
    protocols: &Protocols,
    proxy: Arc<Proxy>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let remote = info.remote;
    let info = Arc::new(info);
    let activity = Arc::new(Activity {
        started: Instant::now(),
        open: AtomicUsize::new(0),
        last_done_ms: AtomicU64::new(0),
        any: AtomicBool::new(false),
    });
    let tracked = activity.clone();
    let svc = service_fn(move |req| {
        let (proxy, info, activity) = (proxy.clone(), info.clone(), tracked.clone());
        async move {
            activity.open.fetch_add(1, Ordering::AcqRel);
            activity.any.store(true, Ordering::Release);
            let response = proxy.handle(req, &info).await;
            let done = activity.started.elapsed().as_millis() as u64;
            activity.last_done_ms.store(done, Ordering::Release);
            activity.open.fetch_sub(1, Ordering::AcqRel);
            Ok::<_, Infallible>(response)
        }
    });
    let builder = if h2 { &protocols.h2 } else { &protocols.h1 };
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let tick = (limits.first_request.min(limits.idle) / 4).max(Duration::from_millis(50));
    let mut watchdog = tokio::time::interval(tick);
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // An idle HTTP/2 peer that does not answer the GOAWAY/PING exchange of a graceful
    // close is dropped when this passes.
    let mut hard_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = watchdog.tick(), if h2 && !closing => {
                let limit = if activity.any.load(Ordering::Acquire) { limits.idle } else { limits.first_request };
                if activity.idle_for().is_some_and(|idle| idle >= limit) {
                    tracing::debug!(%remote, "closing idle HTTP/2 connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    hard_deadline = Some(tokio::time::Instant::now() + limits.first_request);
                }
            }
            _ = sleep_until(hard_deadline), if hard_deadline.is_some() => {
                tracing::debug!(%remote, "dropping unresponsive idle HTTP/2 connection");
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Open connections per client address, capped.
struct PerIp {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one of an address's connection slots until dropped.
struct IpSlot {
    ip: IpAddr,
    owner: Arc<PerIp>,
}

impl PerIp {
    fn new(cap: usize) -> PerIp {
        PerIp {
            cap,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn try_acquire(self: Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().expect("per-ip map lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        drop(open);
        Some(IpSlot { ip, owner: self })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("per-ip map lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

type TlsConn = (tokio_rustls::server::TlsStream<TcpStream>, ConnInfo);

/// The TLS handshake, bounded in time. Failures are counted, logged at debug (scanners
/// and health checkers make many) and end the connection.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    deadline: Duration,
    proxy: &Proxy,
) -> Option<TlsConn> {
    let result = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
    let tls = match result {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            proxy.metrics().connections_refused.inc();
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            proxy.metrics().connections_refused.inc();
            return None;
        }
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| crate::tls::identity(leaf));
    Some((tls, ConnInfo { remote, peer }))
}
