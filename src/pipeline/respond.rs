//! The respond phase: where every error becomes its answer, in one place, and every
//! answer gets its request id and CORS headers.

use http::{HeaderValue, Response};

use super::context::RequestCtx;
use super::cors;
use crate::auth::Clients;
use crate::body::{ProxyBody, full_body};
use crate::error::ApiError;
use crate::metrics::{Metrics, ReasonLabel};

pub(crate) const X_REQUEST_ID: &str = "x-request-id";
/// [`X_REQUEST_ID`] as a header name built at compile time: inserting by `&str` would
/// parse and validate the name again for every response.
const X_REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(X_REQUEST_ID);

/// The answer to send: the upstream's or payshim's own, or the error's in the API's
/// format (counted by reason).
pub(crate) fn finish(
    result: Result<Response<ProxyBody>, ApiError>,
    ctx: &mut RequestCtx<'_>,
    clients: &Clients,
    metrics: &Metrics,
) -> Response<ProxyBody> {
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            let reason = err.reason();
            ctx.reason = Some(reason);
            metrics
                .rejections
                .get_or_create(&ReasonLabel { reason })
                .inc();
            err.to_response(ctx.id.as_str()).map(full_body)
        }
    };
    if let Ok(v) = HeaderValue::from_str(ctx.id.as_str()) {
        response.headers_mut().insert(X_REQUEST_ID_NAME, v);
    }
    cors::decorate(clients, ctx.client, ctx.origin.as_ref(), &mut response);
    response
}
