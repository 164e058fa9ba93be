//! The upstream side: payshim's own connection pool to the commerce API (or the sandbox),
//! request rewriting and timeouts (README.md, Architecture).
//!
//! Rewriting is where credential isolation happens: the storefront's `Authorization` and
//! the hop-by-hop headers are dropped and the store's real bearer token is added.
//! Nothing here ever resends a request that may have reached the API: the pool resends
//! only a request its connection handed back unwritten (`upstream/pool.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};

use crate::body::{ProxyBody, full_body, read_limited};
use crate::config::{UpstreamConfig, UpstreamTarget};
use crate::sandbox;
use crate::tls::{self, TlsError};
use base::Base;
use deadline::Deadline;
use pool::{Pool, PoolSettings};

pub use error::UpstreamError;

mod base;
mod deadline;
mod error;
mod pool;
mod tls_connect;

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
    Remote(Box<Pool>),
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
                let base = Base::new(scheme.clone(), authority.clone());
                let tls = match *scheme == Scheme::HTTPS {
                    true => Some(Arc::new(tls::client_config(config.ca.as_deref())?)),
                    false => None,
                };
                let settings = PoolSettings {
                    idle_timeout: config.pool_idle_timeout,
                    max_idle: config.pool_max_idle,
                    connect_timeout: config.connect_timeout,
                };
                Target::Remote(Box::new(Pool::new(base, tls, &settings)))
            }
        };
        Ok(Upstream {
            target,
            timeout: config.timeout,
        })
    }

    /// Sends one request with the given bearer value (resent only if it provably never
    /// left, see the pool). The whole answer, head and body, is bounded by
    /// `upstream.timeout`.
    pub async fn send(&self, out: Outgoing, bearer: &HeaderValue) -> Result<Answer, UpstreamError> {
        let started = Instant::now();
        let pool = match &self.target {
            Target::Sandbox => {
                let response =
                    sandbox::respond(&out.method, out.path_and_query.as_str(), &out.body);
                return Ok(Answer {
                    response: response.map(full_body),
                    latency: started.elapsed(),
                });
            }
            Target::Remote(pool) => pool,
        };
        let request = build_request(pool.base(), out, bearer);
        // Boxed: the pool's send is most of a request's future; boxed once here, the
        // futures of every phase above it stay small and cheap to move.
        let sending = Box::pin(pool.send(request));
        let response = match tokio::time::timeout(self.timeout, sending).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(result) => result?,
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
        let pool = match &self.target {
            Target::Sandbox => return Err(UpstreamError::Unreachable("sandbox".into())),
            Target::Remote(pool) => pool,
        };
        let path = PathAndQuery::try_from(path)
            .map_err(|_| UpstreamError::Failed("request path is not a valid URI".into()))?;
        let request = Request::builder()
            .method(method)
            .uri(Uri::from(path))
            .header(header::HOST, pool.base().host.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let fut = async {
            let resp = pool.send(request).await?;
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
/// The URI is in origin form (path and query): what HTTP/1.1 sends; the pool adds scheme
/// and authority for HTTP/2.
fn build_request(base: &Base, out: Outgoing, bearer: &HeaderValue) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(out.body));
    *request.method_mut() = out.method;
    *request.uri_mut() = Uri::from(out.path_and_query);
    *request.headers_mut() = out.headers;
    let headers = request.headers_mut();
    headers.insert(header::HOST, base.host.clone());
    headers.insert(header::AUTHORIZATION, bearer.clone());
    request
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
