//! The upstream call with the store's token: credential isolation's last step.
//!
//! Never retried once the API may have processed it. The one exception is an upstream
//! 401 (our token rejected, nothing processed), resent once with a freshly fetched token;
//! a copy of the request is kept for that resend only when a fresh token can exist.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};

use crate::auth::UpstreamToken;
use crate::body::ProxyBody;
use crate::error::ApiError;
use crate::upstream::{Outgoing, Upstream, UpstreamError};

/// The upstream client and the token it sends.
pub(crate) struct Caller {
    pub upstream: Arc<Upstream>,
    pub token: UpstreamToken,
}

/// An answer from the API and the time its head took.
pub(crate) struct Called {
    pub response: Response<ProxyBody>,
    pub latency: Duration,
}

impl Caller {
    /// One upstream call (two only after a 401, see the module doc).
    pub(crate) async fn send(&self, out: Outgoing) -> Result<Called, ApiError> {
        let Some(bearer) = self.token.bearer().await else {
            return Err(ApiError::NotReady("no upstream token"));
        };
        let spare = self.token.can_refresh().then(|| out.clone());
        match self.upstream.send(out, &bearer).await {
            Ok(answer) if answer.response.status() == StatusCode::UNAUTHORIZED => {
                tracing::warn!("upstream rejected the store token (401)");
                let Some(out) = spare else {
                    return Err(ApiError::UpstreamBadResponse);
                };
                // Boxed: the rare resend (a token fetch included) would otherwise make
                // every request's future larger.
                Box::pin(self.resend_with_fresh_token(out, &bearer)).await
            }
            Ok(answer) => Ok(Called {
                response: answer.response,
                latency: answer.latency,
            }),
            Err(e) => Err(upstream_error(e)),
        }
    }

    /// The one resend after an upstream 401, with a freshly fetched token.
    async fn resend_with_fresh_token(
        &self,
        out: Outgoing,
        rejected: &HeaderValue,
    ) -> Result<Called, ApiError> {
        let Some(fresh) = self.token.refresh_after_rejection(rejected).await else {
            return Err(ApiError::UpstreamBadResponse);
        };
        let answer = self
            .upstream
            .send(out, &fresh)
            .await
            .map_err(upstream_error)?;
        if answer.response.status() == StatusCode::UNAUTHORIZED {
            tracing::error!("upstream rejected a freshly obtained token (401)");
            return Err(ApiError::UpstreamBadResponse);
        }
        Ok(Called {
            response: answer.response,
            latency: answer.latency,
        })
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
