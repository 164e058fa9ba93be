//! The public listener: accept, TLS handshake, HTTP/1.1 or HTTP/2, graceful shutdown.
//!
//! Connection-level protection lives here: a cap on open connections (excess ones wait in
//! the kernel backlog), a deadline for the TLS handshake, the idle watchdog (`watch`: slow
//! or silent request heads, idle keep-alive and HTTP/2 connections), a header size cap, a
//! cap on concurrent HTTP/2 streams, HTTP/2 reset limits and a fair share of the worker for
//! each HTTP/2 connection (`fair`). The protocol is chosen by ALPN, so no connection sits
//! in protocol detection without a timer.

mod fair;
mod flood;
mod park;
mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch as signal};
use tokio_rustls::TlsAcceptor;

use crate::body::{Guarded, ProxyBody};
use crate::config::ServerConfig;
use crate::conn::ConnInfo;
use crate::metrics::ConnMetrics;
use crate::swap::Swap;
use fair::Fair;
use watch::{IdleLimits, Watchdog};

/// What the public listener serves: a request in, its answer out, never an error (the
/// handler turns its errors into answers).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

/// Streams an HTTP/2 peer may reset before they are served, per connection.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams payshim may reset for a peer's errors, per connection.
const H2_MAX_ERROR_RESETS: usize = 1024;
/// Bytes an HTTP/2 connection task reads before it lets other tasks run (see `fair`): one
/// frame of the default maximum size.
const H2_READ_QUANTUM: usize = 16 * 1024;

/// Protocol builders, made once and shared by every connection.
struct Protocols {
    h1: http1::Builder,
    h2: Builder<TokioExecutor>,
}

impl Protocols {
    fn new(settings: &ServerConfig) -> Protocols {
        let mut h1 = http1::Builder::new();
        // No hyper header read timeout: the watchdog bounds slow heads without a timer per
        // request (measured in bench/, side by side).
        h1.header_read_timeout(None)
            .keep_alive(true)
            // Head and body copied into one buffer: rustls encrypts a copy anyway, and
            // one flat write measured +1.4 % against vectored ones (bench/, side by side).
            .writev(false)
            .max_buf_size(settings.max_header_size.max(8192));
        let mut h2 = Builder::new(TokioExecutor::new()).http2_only();
        // HTTP/2 abuse from one connection (tests/it/h2_abuse.rs, bench/h2-abuse.sh): the
        // header list cap also caps a header block's CONTINUATION frames (GOAWAY past it)
        // and its decoded size (an HPACK bomb); SETTINGS and PING floods get one answer per
        // frame, written before the next frame is read, the connection's task gives way
        // to others after every H2_READ_QUANTUM bytes (`fair`), and the watchdog closes a
        // connection that carries no request.
        h2.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_h2_streams)
            .max_header_list_size(settings.max_header_size as u32)
            // Rapid reset (CVE-2023-44487): GOAWAY once this many streams are reset by
            // the peer before payshim has served them. h2's default, set here so that a
            // change of defaults cannot remove it.
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            // Streams payshim has to reset for the peer's errors (refused beyond the
            // stream cap, malformed): GOAWAY past this many per connection.
            .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
            .keep_alive_interval(Some(settings.idle_timeout))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols { h1, h2 }
    }
}

/// Accepts connections until `shutdown` flips, then lets in-flight requests finish for up
/// to `shutdown_grace`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Arc<Swap<rustls::ServerConfig>>,
    handler: Arc<H>,
    metrics: ConnMetrics,
    settings: &ServerConfig,
    mut shutdown: signal::Receiver<bool>,
) {
    let protocols = Arc::new(Protocols::new(settings));
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let per_ip = Arc::new(PerIp::new(settings.max_connections_per_ip));
    let watchdog = Watchdog::new(IdleLimits {
        first_request: settings.header_read_timeout,
        idle: settings.idle_timeout,
    });
    let watching = AbortOnDrop(tokio::spawn(watchdog.clone().run()));
    let handshake_limit = settings.header_read_timeout;
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
            metrics.refused.inc();
            continue;
        };
        // The TLS set-up current at accept: a reload changes later handshakes only.
        let acceptor = TlsAcceptor::from(tls.load());
        let (handler, protocols) = (handler.clone(), protocols.clone());
        let (watchdog, metrics) = (watchdog.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slots = (permit, ip_slot);
            metrics.open.inc();
            let _ = tcp.set_nodelay(true);
            if let Some(conn) = handshake(&acceptor, tcp, remote, handshake_limit, &metrics).await {
                serve_connection(conn, &protocols, handler, &watchdog).await;
            }
            metrics.open.dec();
        });
    }
    drop(listener);
    let open = settings.max_connections - slots.available_permits();
    tracing::info!(
        open_connections = open,
        "shutting down: no longer accepting"
    );
    watchdog.stop_all();
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    drop(watching);
}

/// Stops a background task when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves HTTP on an established TLS connection until it ends, the server shuts down
/// (graceful: in-flight requests finish) or it stays idle too long.
async fn serve_connection<H: Handler>(
    (tls, info): TlsConn,
    protocols: &Protocols,
    handler: Arc<H>,
    watchdog: &Arc<Watchdog>,
) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let remote = info.remote;
    let watched = watchdog.watch(h2);
    let shared = Arc::new((handler, info));
    let requests = watched.clone();
    // Each request's future boxed: hyper moves it (HTTP/2: into a task of its own) as a
    // pointer rather than as kilobytes of pipeline state (memmove was 7 % of payshim's
    // profile under h2load), and an HTTP/1.1 connection can park (`park`).
    let svc = service_fn(move |req| Box::pin(answer(shared.clone(), requests.begin(), req)));
    if !h2 {
        let io = Fair::new(tls, None);
        return park::serve_h1(io, &protocols.h1, svc, &watched, remote).await;
    }
    let io = Fair::new(tls, Some(H2_READ_QUANTUM)).with_flood_limit(flood::MAX_PER_SECOND);
    // Boxed: the task then holds only a pointer to hyper's state.
    let mut conn = Box::pin(protocols.h2.serve_connection(TokioIo::new(io), svc));
    let mut closing = false;
    // A peer that does not answer the GOAWAY/PING exchange of a graceful close is dropped
    // when this passes.
    let mut hard_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                }
                return;
            }
            signal = std::future::poll_fn(|cx| watched.poll_signal(cx)) => {
                if signal.stop() && !closing {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                if signal.idle() && watched.still_idle() && hard_deadline.is_none() {
                    // Goodbye with GOAWAY first.
                    tracing::debug!(%remote, "closing idle HTTP/2 connection");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    hard_deadline =
                        Some(tokio::time::Instant::now() + watchdog.limits().first_request);
                }
            }
            _ = sleep_until(hard_deadline), if hard_deadline.is_some() => {
                tracing::debug!(%remote, "dropping unresponsive idle HTTP/2 connection");
                return;
            }
        }
    }
}

/// One request: the handler's answer, counted as in flight until its body is sent whole.
async fn answer<H: Handler>(
    shared: Arc<(Arc<H>, ConnInfo)>,
    in_flight: watch::InFlight,
    req: Request<Incoming>,
) -> Result<Response<Guarded<ProxyBody, watch::InFlight>>, Infallible> {
    let (handler, info) = &*shared;
    let response = handler.handle(req, info).await;
    Ok(response.map(|body| Guarded::new(body, in_flight)))
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
    metrics: &ConnMetrics,
) -> Option<TlsConn> {
    let result = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
    let tls = match result {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            metrics.refused.inc();
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            metrics.refused.inc();
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
