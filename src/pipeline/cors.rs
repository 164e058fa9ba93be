//! CORS for browser storefronts: exact origins per client, never `*`.
//!
//! A preflight carries no credential, so it is answered for any origin some client
//! allows; the actual request is then checked against its own client's list (403 and
//! nothing forwarded otherwise). Responses, errors included, carry the CORS headers so the
//! SDK can read a 401 or 429 and react.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::auth::{ClientId, Clients};
use crate::body::{ProxyBody, full_body};
use crate::error::ApiError;
use crate::route::RouteName;

const ALLOW_HEADERS: &str = "authorization, content-type, accept, x-moltin-sdk-language, \
     x-moltin-sdk-version, x-moltin-application, x-moltin-application-version, \
     x-moltin-currency, x-moltin-language, x-moltin-customer-token, x-moltin-channel";
const EXPOSE_HEADERS: &str = "x-request-id, retry-after";
const MAX_AGE: &str = "600";

/// The request's `Origin`, if it sent a usable one.
pub(crate) fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Answers a preflight for `route`.
pub(crate) fn preflight(
    clients: &Clients,
    route: RouteName,
    headers: &HeaderMap,
) -> Result<Response<ProxyBody>, ApiError> {
    let origin = origin(headers).ok_or(ApiError::OriginNotAllowed)?;
    if !clients.any_allows_origin(origin) {
        return Err(ApiError::OriginNotAllowed);
    }
    let methods = match route {
        RouteName::Transactions => "GET, OPTIONS",
        RouteName::Passthrough => "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        _ => "POST, OPTIONS",
    };
    let mut resp = Response::new(full_body(""));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    Ok(resp)
}

/// Refuses an actual request from a browser origin its client does not allow.
pub(crate) fn check(
    clients: &Clients,
    client: ClientId,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    match origin(headers) {
        Some(o) if !clients.allows_origin(client, o) => Err(ApiError::OriginNotAllowed),
        _ => Ok(()),
    }
}

/// Adds the CORS response headers when the origin is allowed: for the request's client
/// when known, else for any client (preflights, credential errors).
pub(crate) fn decorate(
    clients: &Clients,
    client: Option<ClientId>,
    request_origin: Option<&HeaderValue>,
    resp: &mut Response<ProxyBody>,
) {
    let Some(value) = request_origin else { return };
    let Ok(origin) = value.to_str() else { return };
    let allowed = match client {
        Some(c) => clients.allows_origin(c, origin),
        None => clients.any_allows_origin(origin),
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value.clone());
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}
