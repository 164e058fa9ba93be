//! `POST /oauth/access_token`: the token exchange, answered by payshim, never forwarded.
//!
//! The official SDK fetches a token here before its first call, exactly as it would from
//! the API: `implicit` with a public client id, or `client_credentials` with a client id
//! and secret. It gets a payshim session token, never the store's.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::{Exchange, Proxy};
use crate::error::ApiError;
use crate::upstream::{ProxyBody, full_body};

#[derive(Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires: u64,
    expires_in: u64,
    identifier: &'static str,
}

pub(crate) async fn exchange(
    proxy: &Proxy,
    req: Request<Incoming>,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, ApiError> {
    let form_type = req
        .headers()
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
    let (parts, body) = req.into_parts();
    let body = proxy.read_body(&parts.headers, body).await?;
    let mut grant = None;
    let mut client_id = None;
    let mut secret = None;
    for (k, v) in form_urlencoded::parse(&body) {
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
        Some("implicit") => (proxy.clients().by_public_id(&client_id), "implicit"),
        Some("client_credentials") => {
            let secret = secret.ok_or(ApiError::InvalidGrant(
                "client_secret is required for client_credentials",
            ))?;
            (
                proxy.clients().by_secret(&client_id, &secret),
                "client_credentials",
            )
        }
        Some(_) => {
            return Err(ApiError::InvalidGrant(
                "grant_type must be implicit or client_credentials",
            ));
        }
        None => return Err(ApiError::InvalidGrant("grant_type is required")),
    };
    let client = client.ok_or(ApiError::UnknownClient)?;
    ex.client = Some(client);
    super::cors::check(proxy.clients(), client, &parts.headers)?;
    let issued = proxy
        .clients()
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
