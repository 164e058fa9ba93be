//! [`AuthError`]: why a storefront was not let in. The pipeline turns each into one HTTP
//! answer (`crate::error::ApiError`); auth itself knows nothing of HTTP statuses.

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential at all (401).
    #[error("missing storefront credential")]
    MissingCredential,
    /// A credential that is malformed, unknown, expired or forged (401).
    #[error("invalid storefront credential")]
    InvalidCredential,
    /// The client's configuration does not list this route (403).
    #[error("route not allowed for client")]
    RouteNotAllowed,
    /// A browser origin the client does not list (403).
    #[error("origin not allowed")]
    OriginNotAllowed,
}

impl AuthError {
    /// The reason name in logs, metrics and audit records.
    pub const fn reason(self) -> &'static str {
        match self {
            AuthError::MissingCredential => "missing_credential",
            AuthError::InvalidCredential => "invalid_credential",
            AuthError::RouteNotAllowed => "route_not_allowed",
            AuthError::OriginNotAllowed => "origin_not_allowed",
        }
    }
}
