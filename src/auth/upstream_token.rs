//! The store's real bearer token, which replaces the storefront's on every forwarded
//! request and never leaves payshim in any other way.

use http::HeaderValue;
use secrecy::ExposeSecret;

use crate::config::UpstreamAuth;
use crate::error::ApiError;

/// Where the upstream `Authorization` value comes from.
pub struct UpstreamToken {
    source: Source,
}

enum Source {
    /// A long-lived token from the config, prepared once.
    Static(HeaderValue),
    /// Sandbox without a token: the value is never sent anywhere.
    Sandbox(HeaderValue),
    /// No token could be obtained: requests that need one get 503.
    Unavailable,
}

impl UpstreamToken {
    pub fn new(auth: &UpstreamAuth) -> UpstreamToken {
        let source = match auth {
            UpstreamAuth::Static(token) => Source::Static(bearer_value(token.expose_secret())),
            UpstreamAuth::None => Source::Sandbox(bearer_value("sandbox")),
            UpstreamAuth::ClientCredentials { .. } => Source::Unavailable,
        };
        UpstreamToken { source }
    }

    /// The `Authorization` header value for the next upstream call.
    pub async fn bearer(&self) -> Result<HeaderValue, ApiError> {
        match &self.source {
            Source::Static(v) | Source::Sandbox(v) => Ok(v.clone()),
            Source::Unavailable => Err(ApiError::NotReady("no upstream token")),
        }
    }

    /// True when a token is in hand (readiness).
    pub fn is_available(&self) -> bool {
        !matches!(self.source, Source::Unavailable)
    }
}

/// `Bearer <token>`, marked sensitive so hyper and any debug output leave it out.
fn bearer_value(token: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    v.set_sensitive(true);
    v
}
