//! Who is calling: storefront credentials in, the store's real token out.
//!
//! Storefronts never hold the store's secret. They authenticate to payshim with an API key
//! (server storefronts), a payshim session token (browser SDK, after the token exchange)
//! or a client certificate (mTLS); [`upstream_token`] supplies the real bearer token that
//! replaces theirs on the way out.

mod error;
pub mod session;
pub mod storefront;
pub mod upstream_token;

pub use error::AuthError;
pub use storefront::{Caller, ClientId, Clients};
pub use upstream_token::UpstreamToken;
