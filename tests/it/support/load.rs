//! Helpers for the abuse-protection tests (`limits_e2e`, `connections`): card payments with
//! chosen card details, raw TLS connections (optionally from another loopback source
//! address), hyper client connections over them, a storefront client bound to a source
//! address, the audit records of a run, and a process's resident memory.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::cards::utc_year_month;
use super::client::{HttpVersion, REQUEST_GUARD, TestResponse, error_text};

/// ALPN for HTTP/1.1 only.
pub const ALPN_H1: &[u8] = b"http/1.1";
/// ALPN for HTTP/2 only.
pub const ALPN_H2: &[u8] = b"h2";

/// A raw-card purchase body (`card_connect`) with the given card details.
pub fn card_payment(number: &str, month: &str, year: &str, cvv: &str) -> String {
    json!({
        "data": {
            "gateway": "card_connect",
            "method": "purchase",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "number": number,
            "month": month,
            "year": year,
            "verification_value": cvv,
        }
    })
    .to_string()
}

/// A year (four digits) `ahead` years from now, for expiry dates that are valid.
pub fn future_year(ahead: u16) -> String {
    (utc_year_month().0 + ahead).to_string()
}

/// `POST {base}/v2/orders/{order}/payments` with JSON and `Authorization: Bearer <bearer>`.
/// `base` is `https://localhost:PORT` (no trailing slash).
pub fn payment_to(base: &str, order: &str, bearer: &str, body: &str) -> Request<Bytes> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/v2/orders/{order}/payments"))
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {bearer}"))
        .body(Bytes::copy_from_slice(body.as_bytes()))
        .expect("build payment request")
}

/// A rustls client config trusting only the certificates of `ca_pem`, offering `alpn`.
pub fn tls_config(ca_pem: &str, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("parse CA PEM"))
            .expect("add CA to root store");
    }
    assert!(!roots.is_empty(), "no certificate in the CA PEM");
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TCP connection to `addr`, from `local` (port chosen by the kernel) when given. All of
/// 127.0.0.0/8 is routed to `lo` on Linux, so `127.0.0.2` is a second client address.
pub async fn tcp_connect(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// TCP connect plus TLS handshake (server name `localhost`), bounded by `guard`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
    local: Option<IpAddr>,
    guard: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(tls_config(ca_pem, alpn));
    let connect = async {
        let tcp = tcp_connect(addr, local).await?;
        let name = ServerName::try_from("localhost").expect("server name");
        connector.connect(name, tcp).await
    };
    tokio::time::timeout(guard, connect)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS connection not established within {guard:?}"),
            ))
        })
}

/// Reads (and discards) until the peer closes: `Ok(elapsed)` at EOF or a read error (reset),
/// `Err(())` if it is still open after `limit`.
pub async fn wait_closed<S>(stream: &mut S, limit: Duration) -> Result<Duration, ()>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.map_err(|_| ())
}

/// An HTTP/1.1 client connection over `io` (its driver runs in a task).
pub async fn h1_over<S>(io: S) -> Result<http1::SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| error_text(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// An HTTP/2 client connection over `io` (its driver runs in a task). Streams beyond the
/// server's SETTINGS_MAX_CONCURRENT_STREAMS are queued by the client.
pub async fn h2_over<S>(io: S) -> Result<http2::SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|e| error_text(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Reads a whole response of `resp`, bounded by `REQUEST_GUARD`.
pub async fn complete<F, E>(resp: F) -> Result<TestResponse, String>
where
    F: Future<Output = Result<http::Response<hyper::body::Incoming>, E>>,
    E: std::error::Error + 'static,
{
    let exchange = async {
        let resp = resp.await.map_err(|e| error_text(&e))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| error_text(&e))?.to_bytes();
        Ok(TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            version: parts.version,
        })
    };
    tokio::time::timeout(REQUEST_GUARD, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no complete response within {REQUEST_GUARD:?}")))
}

/// A request for a hyper client connection: origin-form URI plus `Host` for HTTP/1.1,
/// absolute URI for HTTP/2.
pub fn conn_request(
    version: HttpVersion,
    port: u16,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method);
    builder = match version {
        HttpVersion::Http1 => builder
            .uri(path)
            .header("host", format!("localhost:{port}")),
        HttpVersion::Http2 => builder
            .uri(format!("https://localhost:{port}{path}"))
            .version(Version::HTTP_2),
    };
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("build request")
}

/// A storefront client like `TestClient`, whose connections come from the source address
/// `local` (e.g. 127.0.0.2).
#[derive(Clone)]
pub struct LocalClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    version: HttpVersion,
}

impl LocalClient {
    pub fn new(ca_pem: &str, version: HttpVersion, local: IpAddr) -> LocalClient {
        let alpn = match version {
            HttpVersion::Http1 => ALPN_H1,
            HttpVersion::Http2 => ALPN_H2,
        };
        let config = tls_config(ca_pem, alpn);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_local_address(Some(local));
        let connector = HttpsConnector::from((http, config));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(version == HttpVersion::Http2)
            .build(connector);
        LocalClient { client, version }
    }

    /// Sends a request and reads the whole response (like `TestClient::send`).
    pub async fn send(&self, req: Request<Bytes>) -> Result<TestResponse, String> {
        let mut req = req.map(Full::new);
        if self.version == HttpVersion::Http2 {
            *req.version_mut() = Version::HTTP_2;
        }
        complete(self.client.request(req))
            .await
            .map_err(|e| format!("{e} (from {:?})", self.version))
    }
}

/// Every complete line of a JSON Lines audit file (none if it does not exist yet).
pub fn audit_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| serde_json::from_str(line).expect("audit line is JSON"))
        .collect()
}

/// The `payment.rejected` records of `path` whose `reason` is `reason`, once there are at
/// least `n` (rejections are written after the answer, so they may lag a little). Panics
/// with what the file holds after 10 s.
pub async fn wait_rejected(path: &Path, reason: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = audit_records(path);
        let found: Vec<Value> = all
            .iter()
            .filter(|r| r["event"] == "payment.rejected" && r["reason"] == reason)
            .cloned()
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} payment.rejected records with reason {reason:?} in {}; got {}:\n{}",
            path.display(),
            found.len(),
            all.iter()
                .map(|r| format!("{} {} {}", r["event"], r["reason"], r["client_id"]))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// The `p`-th percentile (0..=100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let i = (samples.len() * p).div_ceil(100).clamp(1, samples.len()) - 1;
    samples[i]
}
