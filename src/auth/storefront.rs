//! Storefront authentication: which configured client sent this request.

use std::time::SystemTime;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::AuthError;
use super::session::{self, Issued, SessionKeys};
use crate::config::ClientConfig;
use crate::route::RouteName;
use crate::tls::PeerIdentity;

/// An authenticated caller. `browser` is true for session tokens (the browser SDK):
/// only those are limited per IP, since a server storefront sends everything from the
/// shop's own few addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub client: ClientId,
    pub browser: bool,
}

/// Index of an authenticated client in [`Clients`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId(pub usize);

/// The configured storefronts.
pub struct Clients {
    clients: Vec<ClientConfig>,
    sessions: Option<SessionKeys>,
}

impl Clients {
    pub fn new(clients: Vec<ClientConfig>, sessions: Option<SessionKeys>) -> Clients {
        Clients { clients, sessions }
    }

    /// Who sent a request: the client certificate's client (mTLS) or the bearer
    /// credential's. When both are present they must name the same client.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerIdentity>,
    ) -> Result<Caller, AuthError> {
        let by_cert = peer.and_then(|p| self.by_certificate(p));
        let by_bearer = match (bearer(headers), by_cert) {
            (Err(AuthError::MissingCredential), Some(_)) => None,
            (Err(e), _) => return Err(e),
            (Ok(token), _) => Some(self.by_token(token)?),
        };
        match (by_cert, by_bearer) {
            (Some(a), Some(b)) if a != b.client => Err(AuthError::InvalidCredential),
            (_, Some(caller)) => Ok(caller),
            (Some(client), None) => Ok(Caller {
                client,
                browser: false,
            }),
            (None, None) => Err(AuthError::MissingCredential),
        }
    }

    /// A bearer credential: a payshim session token or an API key.
    fn by_token(&self, token: &str) -> Result<Caller, AuthError> {
        if session::looks_like_session(token) {
            let keys = self.sessions.as_ref().ok_or(AuthError::InvalidCredential)?;
            let id = keys
                .verify(token, SystemTime::now())
                .map_err(|_| AuthError::InvalidCredential)?;
            let client = self.by_id(&id).ok_or(AuthError::InvalidCredential)?;
            return Ok(Caller {
                client,
                browser: true,
            });
        }
        Ok(Caller {
            client: self.by_api_key(token)?,
            browser: false,
        })
    }

    /// The client whose `cert_subject` ("CN=..." or "DNS:...") the certificate presents.
    pub fn by_certificate(&self, peer: &PeerIdentity) -> Option<ClientId> {
        self.clients
            .iter()
            .position(|c| {
                c.cert_subject
                    .as_ref()
                    .is_some_and(|s| peer.names.iter().any(|n| n == s))
            })
            .map(ClientId)
    }

    pub fn by_id(&self, id: &str) -> Option<ClientId> {
        self.clients.iter().position(|c| c.id == id).map(ClientId)
    }

    /// Token exchange, implicit grant: the browser SDK's public client id.
    pub fn by_public_id(&self, public_id: &str) -> Option<ClientId> {
        self.clients
            .iter()
            .position(|c| c.public_id.as_deref() == Some(public_id))
            .map(ClientId)
    }

    /// Token exchange, client_credentials grant: client id and secret (hash compared in
    /// constant time).
    pub fn by_secret(&self, id: &str, secret: &str) -> Option<ClientId> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let client = self.by_id(id)?;
        let expected = self.get(client).secret_sha256.as_ref()?;
        bool::from(expected.ct_eq(&digest)).then_some(client)
    }

    /// A session token for `client`; None when no session key is configured.
    pub fn issue_session(&self, client: ClientId) -> Option<Issued> {
        let keys = self.sessions.as_ref()?;
        Some(keys.issue(&self.get(client).id, SystemTime::now()))
    }

    /// Whether any client allows this browser origin (preflights carry no credential).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.clients
            .iter()
            .any(|c| c.allowed_origins.iter().any(|o| o == origin))
    }

    pub fn allows_origin(&self, id: ClientId, origin: &str) -> bool {
        self.get(id).allowed_origins.iter().any(|o| o == origin)
    }

    pub fn get(&self, id: ClientId) -> &ClientConfig {
        &self.clients[id.0]
    }

    /// Authenticates by API key: `Authorization: Bearer <key>` (or `Bearer: <key>`, which
    /// old SDKs send). Every client's hash is compared in constant time, without early
    /// exit, so timing says nothing about which keys exist.
    pub fn by_api_key(&self, key: &str) -> Result<ClientId, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(expected) = &c.api_key_sha256
                && bool::from(expected.ct_eq(&digest))
            {
                found = Some(ClientId(i));
            }
        }
        found.ok_or(AuthError::InvalidCredential)
    }

    /// Refuses a route the client is not configured for.
    pub fn check_route(&self, id: ClientId, route: RouteName) -> Result<(), AuthError> {
        match &self.get(id).routes {
            Some(allowed) if !allowed.contains(&route) => Err(AuthError::RouteNotAllowed),
            _ => Ok(()),
        }
    }
}

/// The credential in `Authorization`, if any. Accepts `Bearer <t>` and `Bearer: <t>`,
/// scheme case-insensitive.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingCredential)?
        .to_str()
        .map_err(|_| AuthError::InvalidCredential)?;
    let (scheme, rest) = value
        .split_at_checked(6)
        .ok_or(AuthError::InvalidCredential)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidCredential);
    }
    let token = rest.strip_prefix(':').unwrap_or(rest).trim();
    if token.is_empty() {
        return Err(AuthError::MissingCredential);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn client(id: &str, key: &str) -> ClientConfig {
        ClientConfig {
            id: id.into(),
            public_id: None,
            allowed_origins: vec![],
            api_key_sha256: Some(Sha256::digest(key.as_bytes()).into()),
            secret_sha256: None,
            cert_subject: None,
            routes: Some(vec![RouteName::Payments]),
        }
    }

    #[test]
    fn bearer_forms() {
        let cases = [
            ("Bearer abc", Ok("abc")),
            ("bearer abc", Ok("abc")),
            ("Bearer: abc", Ok("abc")),
            ("Bearer:abc", Ok("abc")),
            ("Basic abc", Err("invalid_credential")),
            ("Bearer ", Err("missing_credential")),
            ("Bear", Err("invalid_credential")),
        ];
        for (header, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(header));
            assert_eq!(bearer(&h).map_err(|e| e.reason()), want, "{header}");
        }
        assert_eq!(
            bearer(&HeaderMap::new()).map_err(|e| e.reason()),
            Err("missing_credential")
        );
    }

    #[test]
    fn api_keys_and_routes() {
        let clients = Clients::new(vec![client("a", "key-a"), client("b", "key-b")], None);
        assert_eq!(clients.by_api_key("key-b").unwrap(), ClientId(1));
        assert!(clients.by_api_key("key-c").is_err());
        assert!(
            clients
                .check_route(ClientId(0), RouteName::Payments)
                .is_ok()
        );
        assert!(clients.check_route(ClientId(0), RouteName::Refund).is_err());
    }
}
