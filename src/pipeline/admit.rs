//! The admit phase: who is calling, and may they do this, all before the body is read.
//!
//! Storefront credential, the cheap limits (per IP for browser callers and failed
//! credentials, then per client), the client's route permission and its browser origin.
//! The token exchange has no credential yet: only its IP limit applies here, and its
//! client is checked when its body names it.

use http::{HeaderMap, Response};

use super::context::RequestCtx;
use crate::auth::{ClientId, Clients};
use crate::body::ProxyBody;
use crate::error::ApiError;
use crate::limit::Limiter;
use crate::pipeline::cors;
use crate::route::Route;

/// What admission decided for a request it did not refuse.
pub(crate) enum Admitted {
    /// Go on to read the body.
    Proceed,
    /// Answered here: a CORS preflight, which carries no credential.
    Answered(Response<ProxyBody>),
}

/// The parts of the pipeline admission needs.
pub(crate) struct Admission<'a> {
    pub clients: &'a Clients,
    pub limiter: &'a Limiter,
}

impl Admission<'_> {
    /// Admits the request, answers it (preflights) or refuses it. When it proceeds,
    /// `ctx.client` is set for every route but the token exchange.
    pub(crate) async fn admit(
        &self,
        ctx: &mut RequestCtx<'_>,
        headers: &HeaderMap,
    ) -> Result<Admitted, ApiError> {
        match ctx.route {
            Route::NotFound => Err(ApiError::NotFound),
            Route::Preflight(name) => Ok(Admitted::Answered(cors::preflight(
                self.clients,
                name,
                headers,
            )?)),
            Route::TokenExchange => {
                self.limiter.check_ip(ctx.conn.remote.ip()).await?;
                Ok(Admitted::Proceed)
            }
            _ => {
                let client = self.storefront(ctx, headers).await?;
                self.clients.check_route(client, ctx.route.name())?;
                cors::check(self.clients, client, headers)?;
                Ok(Admitted::Proceed)
            }
        }
    }

    /// The storefront's credential and the cheap limits. A failed credential counts
    /// against the caller's IP, as a browser's does.
    async fn storefront(
        &self,
        ctx: &mut RequestCtx<'_>,
        headers: &HeaderMap,
    ) -> Result<ClientId, ApiError> {
        let caller = self.clients.authenticate(headers, ctx.conn.peer.as_ref());
        if let Ok(c) = &caller {
            ctx.client = Some(c.client);
        }
        if caller.as_ref().map_or(true, |c| c.browser) {
            self.limiter.check_ip(ctx.conn.remote.ip()).await?;
        }
        let client = caller?.client;
        self.limiter
            .check_client(&self.clients.get(client).id)
            .await?;
        Ok(client)
    }
}
