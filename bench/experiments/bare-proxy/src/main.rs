//! The least a tokio + hyper + rustls reverse proxy does for bench/'s passthrough request:
//! TLS 1.3 termination, HTTP/1.1 keep-alive, the `Authorization` header replaced, the body
//! forwarded over a LIFO pool of kept-alive upstream connections, the answer sent back.
//! No authentication, routing, request id, log line, metrics or limits: what is left is the
//! cost of the stack itself, the floor under payshim's passthrough on the same stack.
//!
//! One thread (`current_thread` + `LocalSet`, `Rc` instead of `Arc`), as payshim with
//! `server.workers = 1`. Configured by the environment bench/run.sh gives payshim:
//! `PAYSHIM__SERVER__LISTEN`, `PAYSHIM__ADMIN__LISTEN` (answers 200 to anything, for the
//! readiness probe) and `PAYSHIM__UPSTREAM__URL` (plain `http://host:port` only).

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Sender = client::SendRequest<Full<Bytes>>;

struct Proxy {
    upstream: String,
    host: HeaderValue,
    token: HeaderValue,
    idle: RefCell<Vec<Sender>>,
}

fn main() {
    let listen = var("PAYSHIM__SERVER__LISTEN", "127.0.0.1:18443");
    let admin = var("PAYSHIM__ADMIN__LISTEN", "127.0.0.1:19901");
    let upstream = var("PAYSHIM__UPSTREAM__URL", "http://127.0.0.1:18080");
    let upstream = upstream
        .strip_prefix("http://")
        .expect("plain http:// upstream only")
        .trim_end_matches('/')
        .to_string();
    let proxy = Rc::new(Proxy {
        host: HeaderValue::from_str(&upstream).expect("upstream host"),
        upstream,
        token: HeaderValue::from_static("Bearer bench-upstream-token"),
        idle: RefCell::new(Vec::new()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let tls = TlsAcceptor::from(tls_config());
        let server = TcpListener::bind(&listen).await.expect("bind listen");
        let admin = TcpListener::bind(&admin).await.expect("bind admin");
        tokio::task::spawn_local(serve_admin(admin));
        loop {
            let Ok((tcp, _)) = server.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tls, proxy) = (tls.clone(), proxy.clone());
            tokio::task::spawn_local(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req| answer(proxy.clone(), req));
                let _ = server::Builder::new()
                    .writev(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn answer(
    proxy: Rc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match forward(&proxy, req).await {
        Some(response) => response,
        None => {
            let mut bad = Response::new(Full::new(Bytes::from_static(b"{\"errors\":[]}")));
            *bad.status_mut() = StatusCode::BAD_GATEWAY;
            bad
        }
    })
}

async fn forward(proxy: &Proxy, req: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    parts
        .headers
        .insert(header::AUTHORIZATION, proxy.token.clone());
    parts.headers.insert(header::HOST, proxy.host.clone());
    let mut sender = checkout(proxy).await?;
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .ok()?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    proxy.idle.borrow_mut().push(sender);
    Some(Response::from_parts(parts, Full::new(body)))
}

/// The most recently used idle connection, else a new one.
async fn checkout(proxy: &Proxy) -> Option<Sender> {
    loop {
        let Some(mut sender) = proxy.idle.borrow_mut().pop() else {
            break;
        };
        if sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
    let tcp = TcpStream::connect(&proxy.upstream).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = client::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::task::spawn_local(connection);
    Some(sender)
}

/// 200 to every request: the bench's readiness probe.
async fn serve_admin(admin: TcpListener) {
    loop {
        let Ok((tcp, _)) = admin.accept().await else {
            continue;
        };
        tokio::task::spawn_local(async move {
            let service = service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
            });
            let _ = server::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// A self-signed ECDSA P-256 certificate, as payshim's dev certificate.
fn tls_config() -> Arc<rustls::ServerConfig> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}
