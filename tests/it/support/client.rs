//! A storefront test client: hyper-util's legacy client over hyper-rustls, trusting only the
//! test CA, speaking exactly one HTTP version, optionally presenting a client certificate.

use std::error::Error as StdError;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pki::{load_certs, load_key};

/// No single request of a test should take longer than this; past it `send` returns an error
/// instead of hanging the test.
pub const REQUEST_GUARD: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    /// ALPN `http/1.1` only.
    Http1,
    /// ALPN `h2` only (prior knowledge on plain `http://` URLs).
    Http2,
}

#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    version: HttpVersion,
}

/// A complete response (the body was read to its end).
#[derive(Clone, Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl TestResponse {
    /// The body parsed as JSON (panics with status and body text if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestClient {
    pub fn new(ca_pem: &str, version: HttpVersion) -> TestClient {
        Self::build(ca_pem, version, None)
    }

    pub fn with_client_cert(
        ca_pem: &str,
        version: HttpVersion,
        cert: &Path,
        key: &Path,
    ) -> TestClient {
        Self::build(ca_pem, version, Some((cert, key)))
    }

    fn build(ca_pem: &str, version: HttpVersion, identity: Option<(&Path, &Path)>) -> TestClient {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.expect("parse CA PEM"))
                .expect("add CA to root store");
        }
        assert!(!roots.is_empty(), "no certificate in the CA PEM");
        let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert), load_key(key))
                .expect("client certificate and key"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match version {
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
            HttpVersion::Http2 => vec![b"h2".to_vec()],
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = HttpsConnector::from((http, config));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(version == HttpVersion::Http2)
            .build(connector);
        TestClient { client, version }
    }

    /// Sends a request and reads the whole response. Err carries the error text with its
    /// causes (handshake failure, reset, incomplete body, ...).
    pub async fn send(&self, req: Request<Bytes>) -> Result<TestResponse, String> {
        let mut req = req.map(Full::new);
        if self.version == HttpVersion::Http2 {
            *req.version_mut() = Version::HTTP_2;
        }
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| error_text(&e))?;
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

    /// POST with `Content-Type: application/json` and, if given, `Authorization: Bearer <t>`.
    pub async fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> Result<TestResponse, String> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = builder
            .body(Bytes::copy_from_slice(body.as_bytes()))
            .map_err(|e| format!("bad request: {e}"))?;
        self.send(req).await
    }

    /// GET with, if given, `Authorization: Bearer <t>`.
    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<TestResponse, String> {
        let mut builder = Request::builder().method(Method::GET).uri(url);
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = builder
            .body(Bytes::new())
            .map_err(|e| format!("bad request: {e}"))?;
        self.send(req).await
    }
}

/// An error and all its causes, `outer: inner: innermost`.
pub fn error_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends a hand-built TLS 1.1-only ClientHello (record and client_version 0x0302, no
/// supported_versions extension, TLS 1.0/1.1 cipher suites, SNI localhost) and returns the
/// first bytes the server answers: normally a TLS alert record (content type 0x15). Err if the
/// connection closed (or reset) without an answer, or nothing came within 5 s.
pub async fn tls11_client_hello(addr: SocketAddr) -> io::Result<Vec<u8>> {
    const GUARD: Duration = Duration::from_secs(5);
    let timed_out = |what: &str| io::Error::new(io::ErrorKind::TimedOut, what.to_owned());
    let mut stream = tokio::time::timeout(GUARD, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("connect timed out"))??;
    stream.write_all(&tls11_hello_bytes("localhost")).await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // Enough for one whole record: 5-byte header plus its length.
        if answer.len() >= 5 {
            let record_len = usize::from(u16::from_be_bytes([answer[3], answer[4]]));
            if answer.len() >= 5 + record_len {
                break;
            }
        }
        let n = match tokio::time::timeout(GUARD, stream.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) if answer.is_empty() => return Err(timed_out("no answer within 5 s")),
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed without an answer",
        ));
    }
    Ok(answer)
}

/// The bytes of a TLS 1.1 ClientHello record.
pub fn tls11_hello_bytes(server_name: &str) -> Vec<u8> {
    fn u16be(v: usize) -> [u8; 2] {
        u16::try_from(v).expect("fits in u16").to_be_bytes()
    }
    let mut random = Vec::with_capacity(32);
    while random.len() < 32 {
        let state = RandomState::new();
        random.extend_from_slice(&state.hash_one(random.len()).to_be_bytes());
    }

    let mut extensions = Vec::new();
    // server_name (0): list of one host_name entry.
    let name = server_name.as_bytes();
    extensions.extend_from_slice(&[0x00, 0x00]);
    extensions.extend_from_slice(&u16be(name.len() + 5));
    extensions.extend_from_slice(&u16be(name.len() + 3));
    extensions.push(0x00);
    extensions.extend_from_slice(&u16be(name.len()));
    extensions.extend_from_slice(name);
    // supported_groups (10): secp256r1, secp384r1.
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x18]);
    // ec_point_formats (11): uncompressed.
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);

    // TLS 1.0/1.1 suites: ECDHE-RSA-AES128-SHA, ECDHE-RSA-AES256-SHA,
    // ECDHE-ECDSA-AES128-SHA, ECDHE-ECDSA-AES256-SHA, AES128-SHA, AES256-SHA,
    // DES-CBC3-SHA, and the renegotiation SCSV.
    let suites: [u16; 8] = [
        0xc013, 0xc014, 0xc009, 0xc00a, 0x002f, 0x0035, 0x000a, 0x00ff,
    ];

    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x02]); // client_version TLS 1.1
    body.extend_from_slice(&random);
    body.push(0x00); // empty session id
    body.extend_from_slice(&u16be(suites.len() * 2));
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[0x01, 0x00]); // compression: null only
    body.extend_from_slice(&u16be(extensions.len()));
    body.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // ClientHello
    let len = u32::try_from(body.len())
        .expect("hello length")
        .to_be_bytes();
    handshake.extend_from_slice(&len[1..]);
    handshake.extend_from_slice(&body);

    let mut record = vec![0x16, 0x03, 0x02]; // handshake record, TLS 1.1
    record.extend_from_slice(&u16be(handshake.len()));
    record.extend_from_slice(&handshake);
    record
}

/// A request body sent as separate pieces with no length known in advance: hyper sends it
/// with `Transfer-Encoding: chunked` on HTTP/1.1 and as DATA frames without
/// `content-length` on HTTP/2. With `open`, the body never ends after its last piece (no
/// final chunk, no END_STREAM): the client keeps it open until the request is dropped.
pub struct StreamedBody {
    pieces: std::collections::VecDeque<Bytes>,
    open: bool,
    /// Counts the pieces handed to the client so far (`counted`).
    taken: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

impl StreamedBody {
    /// `total` bytes of `fill` in pieces of at most `piece` bytes, then the end of the body.
    pub fn new(fill: u8, total: usize, piece: usize) -> StreamedBody {
        let mut pieces = std::collections::VecDeque::new();
        let mut left = total;
        while left > 0 {
            let n = left.min(piece);
            pieces.push_back(Bytes::from(vec![fill; n]));
            left -= n;
        }
        StreamedBody {
            pieces,
            open: false,
            taken: None,
        }
    }

    /// These exact pieces, then the end of the body.
    pub fn pieces(pieces: impl IntoIterator<Item = Bytes>) -> StreamedBody {
        StreamedBody {
            pieces: pieces.into_iter().collect(),
            open: false,
            taken: None,
        }
    }

    /// The number of pieces the client has taken so far goes to `taken`.
    pub fn counted(
        mut self,
        taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> StreamedBody {
        self.taken = Some(taken);
        self
    }

    /// The same pieces, but the body stays open after the last one.
    pub fn left_open(mut self) -> StreamedBody {
        self.open = true;
        self
    }
}

impl hyper::body::Body for StreamedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match self.pieces.pop_front() {
            Some(piece) => {
                if let Some(taken) = &self.taken {
                    taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
            }
            // Left open: never ready again (and never woken), like a client that stopped
            // sending without finishing its body.
            None if self.open => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.open && self.pieces.is_empty()
    }

    // `size_hint` keeps its default (no exact length): that is what makes hyper stream it.
}
