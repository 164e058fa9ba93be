//! The request handler: runs the steps of DESIGN.md section 1 in order, nothing else.
//!
//! request id -> route -> storefront authentication -> (payments: body, validation,
//! audit) -> upstream -> response. Every step that refuses a request does so before
//! anything is sent upstream, and every response carries `X-Request-Id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::audit::{AuditLog, AuditSettings};
use crate::auth::session::SessionKeys;
use crate::auth::{ClientId, Clients, UpstreamToken};
use crate::config::Config;
use crate::error::ApiError;
use crate::limit::Limiter;
use crate::metrics::Metrics;
use crate::metrics::ReasonLabel;
use crate::route::{Route, RoutePattern};
use crate::server::ConnInfo;
use crate::tls::TlsError;
use crate::upstream::{self, Outgoing, ProxyBody, Upstream, UpstreamError};

use payments::Payments;
use transactions::Transactions;

mod cors;
mod forward;
mod payments;
mod token;
mod transactions;

pub const X_REQUEST_ID: &str = "x-request-id";
/// [`X_REQUEST_ID`] as a header name built at compile time: inserting by `&str` would
/// parse and validate the name again for every response.
const X_REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(X_REQUEST_ID);

/// Everything the handler needs, built once from the validated config.
pub struct Proxy {
    clients: Clients,
    extra_routes: Vec<RoutePattern>,
    upstream: std::sync::Arc<Upstream>,
    token: UpstreamToken,
    metrics: Metrics,
    max_body: usize,
    body_timeout: Duration,
    audit: AuditLog,
    payments: Payments,
    limiter: Limiter,
    limits_fail_closed: bool,
    detached: Arc<forward::Detached>,
}

/// What one request did, for its log line and metrics.
#[derive(Default)]
pub(crate) struct Exchange {
    pub client: Option<ClientId>,
    pub upstream_latency: Option<Duration>,
    pub reason: Option<&'static str>,
    /// Payment details for the log line: never the PAN, CVV or names.
    pub payment: Option<payments::PaymentLog>,
}

impl Proxy {
    /// Builds the handler; runs inside the runtime (it starts the audit writer and, with
    /// client credentials, the upstream token refresher).
    pub fn new(config: &Config) -> Result<Proxy, TlsError> {
        let upstream = std::sync::Arc::new(Upstream::new(&config.upstream)?);
        let sessions = config
            .auth
            .session_key
            .clone()
            .map(|k| SessionKeys::new(k, config.auth.session_ttl));
        let audit = AuditLog::start(AuditSettings {
            path: config.audit.path.clone(),
            key: config.audit.key.clone(),
            max_file_bytes: config.audit.max_file_size,
        });
        Ok(Proxy {
            payments: Payments::new(config),
            limiter: Limiter::start(&config.limits),
            detached: Arc::default(),
            limits_fail_closed: config.limits.on_store_error == crate::config::OnStoreError::Deny,
            audit,
            clients: Clients::new(config.clients.clone(), sessions),
            extra_routes: config.routes.clone(),
            token: UpstreamToken::start(&config.upstream.auth, upstream.clone()),
            upstream,
            metrics: Metrics::new(),
            max_body: config.limits.max_body,
            body_timeout: config.server.header_read_timeout,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Why payshim is not ready to serve payments, if it is not.
    pub async fn readiness_problems(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        if !self.token.is_available().await {
            problems.push("no upstream token");
        }
        if !self.audit.is_healthy() {
            problems.push("audit log not writable");
        }
        // With on_store_error = "local", payments are still served while Redis is down,
        // so that is not a reason to leave the load balancer's rotation.
        if let Some(p) = self.limiter.readiness_problem()
            && self.limits_fail_closed
        {
            problems.push(p);
        }
        problems
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Waits (up to `limit`) for forwarded payments whose storefront already went away,
    /// so their `completed` records are written before the audit log closes.
    pub async fn drain(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.detached.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown: forwarded requests still running; their outcome must be reconciled"
            );
        }
    }

    /// Marks work that must finish before the audit log closes.
    pub(crate) fn detached_work(&self) -> forward::Running {
        self.detached.enter()
    }

    pub(crate) fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Handles one request; never fails (errors become API error responses).
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let mut id_buf = uuid::Uuid::encode_buffer();
        let request_id: &str = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id_buf);
        let method = req.method().clone();
        let route = Route::match_request(&method, req.uri().path(), &self.extra_routes);
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut ex = Exchange::default();
        let mut response = match self.dispatch(&route, req, conn, request_id, &mut ex).await {
            Ok(resp) => resp,
            Err(err) => {
                ex.reason = Some(err.reason());
                self.metrics
                    .rejections
                    .get_or_create(&ReasonLabel {
                        reason: err.reason(),
                    })
                    .inc();
                err.to_response(request_id).map(upstream::full_body)
            }
        };
        if let Ok(v) = HeaderValue::from_str(request_id) {
            response.headers_mut().insert(X_REQUEST_ID_NAME, v);
        }
        cors::decorate(&self.clients, ex.client, origin.as_ref(), &mut response);
        self.record(request_id, &route, &method, &response, &ex, started);
        response
    }

    /// Runs the route's steps. The payment, transaction and token steps are boxed: their
    /// futures are kilobytes, and unboxed they would make every request's future (copied
    /// at each await on the way down) that large, the plain forward's too.
    async fn dispatch(
        self: &Arc<Self>,
        route: &Route,
        req: Request<Incoming>,
        conn: &ConnInfo,
        request_id: &str,
        ex: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ApiError> {
        match route {
            Route::NotFound => Err(ApiError::NotFound),
            Route::Preflight(name) => cors::preflight(&self.clients, *name, req.headers()),
            Route::TokenExchange => {
                self.limiter.check_ip(conn.remote.ip()).await?;
                Box::pin(token::exchange(self, req, ex)).await
            }
            Route::Payment { order_id } => {
                let client = self.admit(&req, conn, route, ex).await;
                let ctx = Context {
                    proxy: self,
                    request_id,
                    conn,
                    order_id: order_id.as_deref(),
                };
                Box::pin(self.payments.handle(&ctx, client, req, ex)).await
            }
            Route::Transaction {
                order_id,
                transaction_id,
                action,
            } => {
                self.admit(&req, conn, route, ex).await?;
                let ctx = Context {
                    proxy: self,
                    request_id,
                    conn,
                    order_id: Some(order_id),
                };
                Box::pin(Transactions::handle(&ctx, transaction_id, *action, req, ex)).await
            }
            Route::TransactionRead { .. } | Route::Passthrough => {
                self.admit(&req, conn, route, ex).await?;
                self.forward(req, ex).await
            }
        }
    }

    pub(crate) fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Storefront authentication, the cheap limits (IP for browser callers and failed
    /// credentials, then client), and what that client may do: this route, from this
    /// browser origin. All before the body is read.
    async fn admit(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
        route: &Route,
        ex: &mut Exchange,
    ) -> Result<ClientId, ApiError> {
        let caller = self.clients.authenticate(req.headers(), conn.peer.as_ref());
        if let Ok(c) = &caller {
            ex.client = Some(c.client);
        }
        if caller.as_ref().map_or(true, |c| c.browser) {
            self.limiter.check_ip(conn.remote.ip()).await?;
        }
        let client = caller?.client;
        self.limiter
            .check_client(&self.clients.get(client).id)
            .await?;
        self.clients.check_route(client, route.name())?;
        cors::check(&self.clients, client, req.headers())?;
        Ok(client)
    }

    /// Forwards a request as it came (headers rewritten, body size-limited).
    async fn forward(
        &self,
        req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let (parts, body) = req.into_parts();
        let body = self.read_body(&parts.headers, body).await?;
        let out = Outgoing {
            method: parts.method.clone(),
            path_and_query: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            headers: upstream::forwardable_headers(&parts.headers),
            body,
        };
        self.send_upstream(out, ex).await
    }

    /// One upstream call with the store's token. Never retried once the API may have
    /// processed it; the one exception is an upstream 401 (our token rejected, nothing
    /// processed), resent once with a freshly fetched token (DESIGN.md section 3). A copy
    /// of the request is kept for that resend only when a fresh token can exist.
    pub(crate) async fn send_upstream(
        &self,
        out: Outgoing,
        ex: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let bearer = self.token.bearer().await?;
        let spare = self.token.can_refresh().then(|| out.clone());
        match self.upstream.send(out, &bearer).await {
            Ok(answer) if answer.response.status() == http::StatusCode::UNAUTHORIZED => {
                // Our token was rejected: nothing was processed, so one resend with a
                // fresh token is safe. A second 401 (or no fresh token) is a 502.
                tracing::warn!("upstream rejected the store token (401)");
                let Some(out) = spare else {
                    return Err(ApiError::UpstreamBadResponse);
                };
                // Boxed: the rare resend (a token fetch included) would otherwise make
                // every request's future larger.
                Box::pin(self.resend_with_fresh_token(out, &bearer, ex)).await
            }
            Ok(answer) => {
                ex.upstream_latency = Some(answer.latency);
                Ok(answer.response)
            }
            Err(e) => Err(upstream_error(e)),
        }
    }

    /// The one resend after an upstream 401, with a freshly fetched token.
    async fn resend_with_fresh_token(
        &self,
        out: Outgoing,
        rejected: &HeaderValue,
        ex: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let Some(fresh) = self.token.refresh_after_rejection(rejected).await else {
            return Err(ApiError::UpstreamBadResponse);
        };
        let answer = self
            .upstream
            .send(out, &fresh)
            .await
            .map_err(upstream_error)?;
        ex.upstream_latency = Some(answer.latency);
        if answer.response.status() == http::StatusCode::UNAUTHORIZED {
            tracing::error!("upstream rejected a freshly obtained token (401)");
            return Err(ApiError::UpstreamBadResponse);
        }
        Ok(answer.response)
    }

    /// Reads the whole request body, refusing it without reading past `limits.max_body`
    /// and within the request read timeout (slow clients).
    pub(crate) async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Bytes, ApiError> {
        let limit = self.max_body;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::BodyTooLarge { limit });
        }
        let collect = http_body_util::Limited::new(body, limit).collect();
        match ready_or_timeout(self.body_timeout, collect).await {
            Err(_) => Err(ApiError::ClientBody),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::BodyTooLarge { limit })
            }
            Ok(Err(_)) => Err(ApiError::ClientBody),
        }
    }

    /// One log line and the metrics for a finished request. Never a body, never a header.
    fn record(
        &self,
        request_id: &str,
        route: &Route,
        method: &Method,
        response: &Response<ProxyBody>,
        ex: &Exchange,
        started: Instant,
    ) {
        let status = response.status().as_u16();
        let total = started.elapsed();
        let route_name = route.name().as_str();
        let client = ex.client.map(|c| self.clients.get(c).id.as_str());
        // Whole microseconds: long decimal fractions would look like digit runs to the
        // scrubber (and be masked into invalid JSON).
        let upstream_us = ex.upstream_latency.map(|d| d.as_micros() as u64);
        let p = ex.payment.as_ref();
        tracing::info!(
            order_id = p.and_then(|p| p.order_id.as_deref()),
            payment_method = p.and_then(|p| p.method),
            brand = p.and_then(|p| p.brand),
            last4 = p.and_then(|p| p.last4.as_deref()),
            outcome = p.map(|p| p.outcome),
            upstream_status = p.and_then(|p| p.upstream_status),
            request_id,
            client,
            route = route_name,
            method = method.as_str(),
            status,
            total_us = total.as_micros() as u64,
            upstream_us,
            reason = ex.reason,
            "request"
        );
        self.metrics.observe_request(
            route.name(),
            static_method(method),
            status,
            total,
            ex.upstream_latency,
        );
    }
}

/// `fut` bounded by `limit`, without arming a timer when it completes on its first poll:
/// a small body usually arrives with its request head, and a timer per request is a
/// measurable share of the proxy's CPU at benchmark rates. The timer of the rare slow case
/// is boxed, so it does not enlarge every request's future.
async fn ready_or_timeout<F: Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => Box::pin(tokio::time::timeout(limit, fut)).await,
    }
}

fn upstream_error(e: UpstreamError) -> ApiError {
    tracing::warn!(error = %e, "upstream call failed");
    match e {
        UpstreamError::Timeout => ApiError::UpstreamTimeout,
        UpstreamError::Unreachable(_) => ApiError::UpstreamUnreachable,
        UpstreamError::Failed(_) => ApiError::UpstreamBadResponse,
    }
}

/// Metric label for a method: known methods by name, anything else as "other", so a
/// client cannot mint label values.
fn static_method(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// What the payment and transaction steps need from the handler for one request.
pub(crate) struct Context<'a> {
    pub proxy: &'a Arc<Proxy>,
    pub request_id: &'a str,
    pub conn: &'a ConnInfo,
    /// `None` only for a payment whose path does not hold a UUID (refused with 400).
    pub order_id: Option<&'a str>,
}
