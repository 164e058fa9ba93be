//! The upstream API test double: stands in for `https://api.moltin.com`.
//!
//! It serves HTTP/1.1 and HTTP/2 (ALPN over TLS; prior knowledge or upgrade-free h2c on the
//! plain variant), records every request in full (the body is read completely before the
//! handler runs) and answers with whatever the current `Handler` returns, including
//! misbehaviour: delays, a reset in the middle of a body, a close without an answer.

use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::pki::TestPki;

/// One request as the double received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, e.g. `/v2/orders/1/transactions?page=2`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body parsed as JSON (panics with the body text if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "recorded body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What the double does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Waits, then does the inner reply.
    Delay(Duration, Box<Reply>),
    /// Sends status 200 and headers with `Content-Length: 1000`, writes the first
    /// `RESET_PARTIAL_BODY.len()` bytes of the body, then drops the TCP connection
    /// abortively (SO_LINGER 0, so the peer sees a reset).
    ResetAfterHeaders,
    /// Like `ResetAfterHeaders`, but after the first part of the body the connection stays
    /// open and silent: an upstream that stalls mid-answer.
    StallAfterHeaders,
    /// Reads the request, then drops the connection without any response.
    CloseImmediately,
    /// Does the inner reply, then closes the connection (FIN) `after` the answer went
    /// out: a server ending a kept-alive connection between requests.
    ThenClose(Duration, Box<Reply>),
    /// Status 200 with `Content-Length`, then the body in `chunks` parts of
    /// [`TRICKLE_CHUNK`], one every `every`: a slow but complete answer.
    Trickle { chunks: usize, every: Duration },
}

/// One part of a `Reply::Trickle` body.
pub const TRICKLE_CHUNK: &[u8] = b"0123456789abcdef";

/// The body bytes sent by `Reply::ResetAfterHeaders` before the connection is dropped.
pub const RESET_PARTIAL_BODY: &[u8] = br#"{"data":{"id":"0b6a4b52-3c4f-4d1e-9a57-1f0e7c7f1a10","type":"transaction","gateway":"card_c"#;
/// The `Content-Length` announced by `Reply::ResetAfterHeaders`.
pub const RESET_ANNOUNCED_LENGTH: usize = 1000;

impl Reply {
    /// A JSON reply (`Content-Type: application/json`).
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).expect("serialize JSON reply"),
        }
    }

    /// A reply with a status and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// This reply after a delay.
    pub fn delayed(self, delay: Duration) -> Reply {
        Reply::Delay(delay, Box::new(self))
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// Wraps a closure as a `Handler`.
pub fn handler(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

struct State {
    /// Connections accepted, and those of them that have ended.
    accepted: AtomicUsize,
    closed: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    handler: Mutex<Handler>,
    count: watch::Sender<usize>,
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
struct ConnControl {
    /// Drop the connection now.
    kill: Notify,
    /// When dropped, close abortively (SO_LINGER 0: RST instead of FIN).
    abortive: AtomicBool,
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

type ResponseBody = BoxBody<Bytes, io::Error>;

fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    control: Arc<ConnControl>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(resp);
        }
    };
    let recorded = Recorded {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned()),
        headers: parts.headers,
        body,
    };
    let handler = state.handler.lock().unwrap().clone();
    {
        let mut requests = state.requests.lock().unwrap();
        requests.push(recorded.clone());
        state.count.send_replace(requests.len());
    }
    let mut reply = handler(&recorded);
    loop {
        match reply {
            Reply::Delay(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            Reply::ThenClose(after, inner) => {
                let control = control.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    control.kill.notify_one();
                });
                reply = *inner;
            }
            Reply::Respond {
                status,
                headers,
                body,
            } => {
                let mut resp = Response::new(full(body));
                *resp.status_mut() =
                    StatusCode::from_u16(status).expect("Reply::Respond status must be 100..=999");
                for (name, value) in headers {
                    resp.headers_mut().append(
                        HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                        HeaderValue::from_str(&value).expect("header value"),
                    );
                }
                return Ok(resp);
            }
            Reply::ResetAfterHeaders | Reply::StallAfterHeaders => {
                let reset = matches!(reply, Reply::ResetAfterHeaders);
                let body = PartialThenReset {
                    control: reset.then_some(control),
                    sent: false,
                    killing: false,
                };
                let mut resp = Response::new(body.boxed());
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(RESET_ANNOUNCED_LENGTH));
                return Ok(resp);
            }
            Reply::Trickle { chunks, every } => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tokio::spawn(async move {
                    for _ in 0..chunks {
                        tokio::time::sleep(every).await;
                        if tx.send(Bytes::from_static(TRICKLE_CHUNK)).await.is_err() {
                            return;
                        }
                    }
                });
                let mut resp = Response::new(Trickled(rx).boxed());
                resp.headers_mut().insert(
                    CONTENT_LENGTH,
                    HeaderValue::from(chunks * TRICKLE_CHUNK.len()),
                );
                return Ok(resp);
            }
            Reply::CloseImmediately => {
                control.kill.notify_one();
                return std::future::pending().await;
            }
        }
    }
}

/// The body of `Reply::Trickle`: the chunks as the sending task hands them over.
struct Trickled(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Trickled {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// The body of `Reply::ResetAfterHeaders`: yields `RESET_PARTIAL_BODY`, and when polled
/// again (so the server has taken the first part and is about to flush it) schedules an
/// abortive drop of the connection and never ends. Without `control`
/// (`Reply::StallAfterHeaders`) it just never ends: the connection stays open and silent.
struct PartialThenReset {
    control: Option<Arc<ConnControl>>,
    sent: bool,
    killing: bool,
}

impl Body for PartialThenReset {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                RESET_PARTIAL_BODY,
            )))));
        }
        if self.killing {
            return Poll::Pending;
        }
        self.killing = true;
        let Some(control) = self.control.clone() else {
            // Stall: never woken, the connection stays open until it is dropped.
            return Poll::Pending;
        };
        tokio::spawn(async move {
            // Let the partial body reach the socket, then cut the connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
            control.abortive.store(true, Ordering::SeqCst);
            control.kill.notify_one();
        });
        // The connection task drops this body with the connection; no wake-up needed.
        Poll::Pending
    }
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers (nor closes them)
/// until the returned task is aborted.
pub async fn blackhole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind blackhole");
    let addr = listener.local_addr().expect("blackhole addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        }
    });
    (addr, task)
}

/// A loopback port nothing listens on, held so that nothing can: a socket bound to it that
/// never listens, so a connection is refused, and no other socket gets the port (a port
/// merely released could be handed to a test running in parallel). Keep it alive while
/// the port is in use.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// A loopback port that refuses connections for as long as the result is kept.
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket for closed port");
    socket
        .bind(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))
        .expect("bind for closed port");
    let addr = socket.local_addr().expect("closed port addr");
    ClosedPort {
        _socket: socket,
        addr,
    }
}

/// A handler that answers like the Moltin API:
/// - `POST /oauth/access_token`: `{"access_token":"upstream-token-N",...}`, N = 1, 2, ...
/// - `POST /v2/orders/{id}/payments`: 201 with a CardConnect transaction (about 600 bytes);
///   `transaction-type` follows the request's `data.method` (purchase, authorize, capture).
/// - `GET /v2/orders/{id}/transactions`: 200 `{"data":[transaction]}`.
/// - anything else: 200 `{"data":{}}`.
pub fn moltin_like() -> Handler {
    let tokens = AtomicU64::new(0);
    Arc::new(move |req: &Recorded| {
        let path = req.path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["oauth", "access_token"]) => {
                let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::json(
                    200,
                    json!({
                        "access_token": format!("upstream-token-{n}"),
                        "expires_in": 3600,
                        "expires": unix_now() + 3600,
                        "token_type": "Bearer",
                        "identifier": "client_credentials",
                    }),
                )
            }
            ("POST", ["v2", "orders", order_id, "payments"]) => {
                let method = serde_json::from_slice::<Value>(&req.body)
                    .ok()
                    .and_then(|v| v["data"]["method"].as_str().map(str::to_owned))
                    .filter(|m| ["purchase", "authorize", "capture"].contains(&m.as_str()))
                    .unwrap_or_else(|| "purchase".to_owned());
                Reply::json(201, json!({ "data": transaction(order_id, &method) }))
            }
            ("GET", ["v2", "orders", order_id, "transactions"]) => {
                Reply::json(200, json!({ "data": [transaction(order_id, "purchase")] }))
            }
            _ => Reply::json(200, json!({ "data": {} })),
        }
    })
}

/// A CardConnect transaction object as the API returns it.
pub fn transaction(order_id: &str, transaction_type: &str) -> Value {
    let now = rfc3339(unix_now());
    json!({
        "id": random_uuid(),
        "type": "transaction",
        "reference": format!("{:012}", random_u64() % 1_000_000_000_000),
        "name": null,
        "custom_reference": null,
        "gateway": "card_connect",
        "amount": 4999,
        "refunded_amount": 0,
        "currency": "USD",
        "transaction-type": transaction_type,
        "status": "complete",
        "relationships": {
            "order": { "data": { "type": "order", "id": order_id } }
        },
        "meta": {
            "display_price": { "amount": 4999, "currency": "USD", "formatted": "$49.99" },
            "display_refunded_amount": { "amount": 0, "currency": "USD", "formatted": "$0.00" },
            "timestamps": { "created_at": now, "updated_at": now }
        }
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), nanos))
}

/// A random (version 4 layout) UUID string.
pub fn random_uuid() -> String {
    let hi = (random_u64() & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (random_u64() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` for a Unix time (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
