//! [`ConnInfo`]: what the request pipeline knows about the connection a request came on.
//!
//! The server fills it in after the TLS handshake; the pipeline reads it. It lives apart
//! from both so that neither imports the other.

use std::net::SocketAddr;

use crate::tls::PeerIdentity;

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// Names from a verified client certificate (mTLS), if one was presented.
    pub peer: Option<PeerIdentity>,
}
