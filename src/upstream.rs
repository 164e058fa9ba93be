//! The upstream side: a pooled HTTPS client to the commerce API (or the sandbox), request
//! rewriting and timeouts.
//!
//! Rewriting is where credential isolation happens: the storefront's `Authorization` and
//! the hop-by-hop headers are dropped and the store's real bearer token is added.
//! Nothing here ever retries a request that may have reached the API.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{self, PathAndQuery};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::{BoxError, ProxyBody, full_body, read_limited};
use crate::config::{UpstreamConfig, UpstreamTarget};
use crate::sandbox;
use crate::tls::{self, TlsError};
use connect::TcpConnector;

mod connect;

/// Why an upstream call produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect (refused, DNS, TLS handshake): nothing was sent.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The connection failed after the request may have been sent.
    #[error("upstream failed: {0}")]
    Failed(String),
    #[error("upstream timed out")]
    Timeout,
}

/// A request ready to go upstream: method, path and query, filtered headers, full body.
#[derive(Clone)]
pub struct Outgoing {
    pub method: Method,
    /// As parsed from the storefront's request: forwarding it again needs no new parse.
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The answer, with the time spent waiting for its head.
pub struct Answer {
    pub response: Response<ProxyBody>,
    pub latency: Duration,
}

enum Target {
    Remote {
        client: Box<Client<HttpsConnector<TcpConnector>, Full<Bytes>>>,
        base: Base,
    },
    Sandbox,
}

pub struct Upstream {
    target: Target,
    timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, TlsError> {
        let target = match &config.target {
            UpstreamTarget::Sandbox => Target::Sandbox,
            UpstreamTarget::Remote(scheme, authority) => {
                let tls = tls::client_config(config.ca.as_deref())?;
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(config.connect_timeout));
                http.set_nodelay(true);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .wrap_connector(TcpConnector(http));
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(256)
                    // Small JSON requests: one flat write beats a vectored one (bench/).
                    .http1_writev(false)
                    // `build_request` sets the prebuilt Host value itself.
                    .set_host(false)
                    .build(https);
                Target::Remote {
                    client: Box::new(client),
                    base: Base::new(scheme.clone(), authority.clone()),
                }
            }
        };
        Ok(Upstream {
            target,
            timeout: config.timeout,
        })
    }

    /// Sends one request with the given bearer value, once. The whole wait for the
    /// response head is bounded by `upstream.timeout`.
    pub async fn send(&self, out: Outgoing, bearer: &HeaderValue) -> Result<Answer, UpstreamError> {
        let started = Instant::now();
        let (client, base) = match &self.target {
            Target::Sandbox => {
                let response =
                    sandbox::respond(&out.method, out.path_and_query.as_str(), &out.body);
                return Ok(Answer {
                    response: response.map(full_body),
                    latency: started.elapsed(),
                });
            }
            Target::Remote { client, base } => (client, base),
        };
        let request = build_request(base, out, bearer)?;
        let response = match tokio::time::timeout(self.timeout, client.request(request)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) if e.is_connect() => {
                return Err(UpstreamError::Unreachable(error_chain(&e)));
            }
            Ok(Err(e)) => return Err(UpstreamError::Failed(error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let latency = started.elapsed();
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let body = Deadline::new(body, deadline).boxed_unsync();
        Ok(Answer {
            response: Response::from_parts(parts, body),
            latency,
        })
    }

    /// A simple request payshim makes for itself (the upstream token endpoint).
    pub async fn send_plain(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(u16, Bytes), UpstreamError> {
        let (client, base) = match &self.target {
            Target::Sandbox => return Err(UpstreamError::Unreachable("sandbox".into())),
            Target::Remote { client, base } => (client, base),
        };
        let path = PathAndQuery::try_from(path)
            .map_err(|_| UpstreamError::Failed("request path is not a valid URI".into()))?;
        let uri = base.uri(path)?;
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, base.host.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let fut = async {
            let resp = client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Unreachable(error_chain(&e))
                } else {
                    UpstreamError::Failed(error_chain(&e))
                }
            })?;
            let status = resp.status().as_u16();
            let bytes = read_limited(resp.into_body(), 64 * 1024)
                .await
                .map_err(|e| UpstreamError::Failed(e.to_string()))?;
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }
}

/// An upstream answer's body, cut off at the call's deadline: `upstream.timeout` bounds
/// the whole answer, so an upstream that stalls mid-body cannot hold the storefront's
/// request open for ever. The timer is only armed once the body makes a caller wait; an
/// answer that arrives with its head (the usual case) never sets one.
struct Deadline {
    body: Incoming,
    at: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    fn new(body: Incoming, at: tokio::time::Instant) -> Deadline {
        Deadline {
            body,
            at,
            timer: None,
        }
    }
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Incoming and the boxed timer are both Unpin.
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let at = this.at;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(UpstreamError::Timeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Scheme and authority of the API, parsed once at start-up, and the `Host` value they
/// make (the client would otherwise format it again for every request).
struct Base {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host: HeaderValue,
}

impl Base {
    fn new(scheme: http::uri::Scheme, authority: http::uri::Authority) -> Base {
        let default_port = if scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_string(),
        };
        Base {
            scheme,
            authority,
            // An authority is made of characters a header value allows.
            host: HeaderValue::from_str(&host).expect("a URI authority is a valid Host value"),
        }
    }

    fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, UpstreamError> {
        let mut parts = uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts)
            .map_err(|_| UpstreamError::Failed("request path is not a valid URI".into()))
    }
}

/// The path of `uri` without its query (payments and transaction actions never forward
/// one), reusing the parsed path when there is no query to drop.
pub fn path_only(uri: &Uri) -> PathAndQuery {
    match (uri.query(), uri.path_and_query()) {
        (None, Some(pq)) => pq.clone(),
        // A path taken from a parsed URI is a valid path; "/" is never reached.
        _ => PathAndQuery::try_from(uri.path()).unwrap_or_else(|_| PathAndQuery::from_static("/")),
    }
}

/// The request as it goes out: the storefront's filtered headers (moved, not copied), the
/// API's `Host` and the store's bearer token.
fn build_request(
    base: &Base,
    out: Outgoing,
    bearer: &HeaderValue,
) -> Result<Request<Full<Bytes>>, UpstreamError> {
    let uri = base.uri(out.path_and_query)?;
    let mut request = Request::new(Full::new(out.body));
    *request.method_mut() = out.method;
    *request.uri_mut() = uri;
    // The client picks HTTP/2 when ALPN agrees; it needs an HTTP/1.1 request to start from.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = out.headers;
    let headers = request.headers_mut();
    headers.insert(header::HOST, base.host.clone());
    headers.insert(header::AUTHORIZATION, bearer.clone());
    Ok(request)
}

/// The storefront headers that may reach the API: an allow-list, because the store's
/// token has full access. Everything else stays behind: credentials (`Authorization`,
/// cookies), hop-by-hop headers, headers describing a body payshim may have rewritten
/// (`Content-Length`, `Content-Encoding`, digests), method overrides, and
/// `Accept-Encoding` (answers are small JSON that payshim may need to read).
pub fn forwardable_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(8);
    for (name, value) in incoming {
        // Standard names compare as enum tags; only custom names are compared as text.
        let allowed = name == header::ACCEPT
            || name == header::ACCEPT_LANGUAGE
            || name == header::CONTENT_TYPE
            || name == header::USER_AGENT
            || name.as_str().starts_with("x-moltin-");
        if allowed {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Header names listed in `Connection:` are hop-by-hop too (RFC 9110 7.6.1).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The fixed hop-by-hop headers (RFC 9110 7.6.1, plus the legacy `Keep-Alive` and
/// `Proxy-Connection`), as names built at compile time: removing by `&str` would parse
/// each name again for every response.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers from an upstream response before it goes back.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        for token in connection_tokens(headers) {
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped_from_answers() {
        /// Connection values, extra headers, names that must be gone, names that must stay.
        type Case<'a> = (
            &'a [&'a str],
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                &["keep-alive"],
                &[("keep-alive", "timeout=5")],
                &["connection", "keep-alive"],
                &["content-type"],
            ),
            (
                &["close, X-Secret-Hop"],
                &[("x-secret-hop", "1")],
                &["connection", "x-secret-hop"],
                &["content-type"],
            ),
            (
                &["a", "b , ,c"],
                &[("a", "1"), ("b", "2"), ("c", "3")],
                &["a", "b", "c"],
                &["content-type"],
            ),
            (
                &[],
                &[
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "h2c"),
                    ("te", "trailers"),
                ],
                &["transfer-encoding", "upgrade", "te"],
                &["content-type"],
            ),
            (
                &[],
                &[("x-request-id", "1")],
                &[],
                &["content-type", "x-request-id"],
            ),
        ];
        for (connection, extra, gone, kept) in cases {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            for v in *connection {
                h.append("connection", HeaderValue::from_str(v).unwrap());
            }
            for (n, v) in *extra {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            strip_hop_by_hop(&mut h);
            for n in *gone {
                assert!(
                    !h.contains_key(*n),
                    "{n} kept for Connection {connection:?}"
                );
            }
            for n in *kept {
                assert!(
                    h.contains_key(*n),
                    "{n} removed for Connection {connection:?}"
                );
            }
        }
    }

    #[test]
    fn path_only_drops_the_query_and_keeps_the_path() {
        let with_query: Uri = "https://p.example/v2/orders/1/payments?debug=1"
            .parse()
            .unwrap();
        assert_eq!(path_only(&with_query).as_str(), "/v2/orders/1/payments");
        let plain: Uri = "/v2/orders/1/payments".parse().unwrap();
        assert_eq!(path_only(&plain).as_str(), "/v2/orders/1/payments");
    }

    #[test]
    fn the_upstream_uri_joins_base_and_path() {
        let base = Base::new(http::uri::Scheme::HTTPS, "api.moltin.com".parse().unwrap());
        let uri = base
            .uri(PathAndQuery::from_static("/v2/orders?page=2"))
            .unwrap();
        assert_eq!(uri.to_string(), "https://api.moltin.com/v2/orders?page=2");
    }

    #[test]
    fn storefront_credentials_and_hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer storefront"),
        );
        h.insert("host", HeaderValue::from_static("payshim.example"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("cookie", HeaderValue::from_static("session=1"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-moltin-sdk-language", HeaderValue::from_static("JS"));
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        h.insert("x-http-method-override", HeaderValue::from_static("DELETE"));
        h.insert("accept-encoding", HeaderValue::from_static("br"));
        let out = forwardable_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(out.contains_key("content-type"));
        assert!(out.contains_key("x-moltin-sdk-language"));
    }
}
