//! The admin listener: `/healthz`, `/readyz`, `/metrics`, plain HTTP on loopback by default.
//!
//! Kept apart from the public listener so probes and scrapes never need a storefront
//! credential and are never reachable through the public TLS port.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin endpoints report on.
pub trait Status: Send + Sync + 'static {
    /// Why payshim is not ready to serve payments (empty when it is).
    fn readiness_problems(&self) -> impl Future<Output = Vec<&'static str>> + Send;
    /// The metrics in the OpenMetrics text format (async: the readiness gauges are read
    /// at each scrape).
    fn metrics_text(&self) -> impl Future<Output = String> + Send;
}

/// Serves the admin endpoints until `shutdown` flips to true.
pub async fn serve<S: Status>(
    listener: TcpListener,
    status: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    let builder = Arc::new(builder);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let status = status.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let status = status.clone();
                async move { Ok::<_, Infallible>(answer(&*status, &req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

async fn answer<S: Status>(status: &S, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => reply(
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#.into(),
        ),
        "/readyz" => {
            let problems = status.readiness_problems().await;
            let code = if problems.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({
                "ready": problems.is_empty(),
                "problems": problems,
            });
            reply(code, "application/json", body.to_string())
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            status.metrics_text().await,
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"status":"not found"}"#.into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
