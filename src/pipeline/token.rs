//! `POST /oauth/access_token`: the token exchange, answered by payshim, never forwarded.
//!
//! The official SDK fetches a token here before its first call, exactly as it would from
//! the API: `implicit` with a public client id, or `client_credentials` with a client id
//! and secret. It gets a payshim session token, never the store's.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::context::RequestCtx;
use super::cors;
use crate::auth::Clients;
use crate::body::{ProxyBody, full_body};
use crate::error::ApiError;

#[derive(Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires: u64,
    expires_in: u64,
    identifier: &'static str,
}

/// The token request must be a form; checked before its body is read.
pub(crate) fn before_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form_type {
        return Err(ApiError::InvalidGrant(
            "Send the token request as application/x-www-form-urlencoded",
        ));
    }
    Ok(())
}

/// Answers the grant in `body`: a session token for the client it names.
pub(crate) fn answer(
    clients: &Clients,
    ctx: &mut RequestCtx<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<ProxyBody>, ApiError> {
    let mut grant = None;
    let mut client_id = None;
    let mut secret = None;
    for (k, v) in form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "grant_type" => &mut grant,
            "client_id" => &mut client_id,
            "client_secret" => &mut secret,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(ApiError::InvalidGrant(
                "Each parameter may appear only once",
            ));
        }
    }
    let client_id = client_id.ok_or(ApiError::InvalidGrant("client_id is required"))?;
    let (client, identifier) = match grant.as_deref() {
        Some("implicit") => (clients.by_public_id(&client_id), "implicit"),
        Some("client_credentials") => {
            let secret = secret.ok_or(ApiError::InvalidGrant(
                "client_secret is required for client_credentials",
            ))?;
            (clients.by_secret(&client_id, &secret), "client_credentials")
        }
        Some(_) => {
            return Err(ApiError::InvalidGrant(
                "grant_type must be implicit or client_credentials",
            ));
        }
        None => return Err(ApiError::InvalidGrant("grant_type is required")),
    };
    let client = client.ok_or(ApiError::UnknownClient)?;
    ctx.client = Some(client);
    cors::check(clients, client, headers)?;
    let issued = clients
        .issue_session(client)
        .ok_or(ApiError::NotReady("no session key configured"))?;
    let json = serde_json::to_vec(&TokenAnswer {
        access_token: &issued.token,
        token_type: "Bearer",
        expires: issued.expires,
        expires_in: issued.expires_in,
        identifier,
    })
    .expect("token answer serializes");
    let mut resp = Response::new(full_body(json));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
