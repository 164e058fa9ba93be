//! payshim session tokens: what the browser SDK holds instead of the store's token.
//!
//! Stateless: `ps1.<payload>.<mac>`, payload = base64url(`<client id>|<expiry epoch>`),
//! mac = base64url(HMAC-SHA-256(`auth.session_key`, `ps1.<payload>`)). Any replica holding
//! the key accepts any replica's tokens; nothing is stored.
//!
//! Rotation: the new key signs, the old ones (`auth.previous_session_keys`) still verify,
//! so tokens issued before a rotation keep working until they expire (at most
//! `auth.session_ttl`), after which the old key can be dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use secrecy::{ExposeSecret, SecretSlice};

use crate::keyed::KeyedHash;

const PREFIX: &str = "ps1.";

/// Why a presented session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("not a payshim session token")]
    Malformed,
    #[error("session token signature does not verify")]
    BadSignature,
    #[error("session token expired")]
    Expired,
}

/// A freshly issued token.
pub struct Issued {
    pub token: String,
    pub expires: u64,
    pub expires_in: u64,
}

pub struct SessionKeys {
    /// Keyed once here, so issuing or checking a token only hashes the token.
    key: KeyedHash,
    /// Keys of earlier rotations: verify only.
    previous: Vec<KeyedHash>,
    ttl: Duration,
}

impl SessionKeys {
    pub fn new(key: SecretSlice<u8>, ttl: Duration) -> SessionKeys {
        SessionKeys::with_previous(key, &[], ttl)
    }

    /// Signs with `key`; also accepts tokens signed with any of `previous`.
    pub fn with_previous(
        key: SecretSlice<u8>,
        previous: &[SecretSlice<u8>],
        ttl: Duration,
    ) -> SessionKeys {
        SessionKeys {
            key: KeyedHash::new(key.expose_secret()),
            previous: previous
                .iter()
                .map(|k| KeyedHash::new(k.expose_secret()))
                .collect(),
            ttl,
        }
    }

    /// Issues a token for `client_id`, valid for the configured lifetime.
    pub fn issue(&self, client_id: &str, now: SystemTime) -> Issued {
        let now = epoch(now);
        let expires = now + self.ttl.as_secs();
        let payload = B64.encode(format!("{client_id}|{expires}"));
        let signed = format!("{PREFIX}{payload}");
        let mac = B64.encode(self.key.mac(&[signed.as_bytes()]));
        Issued {
            token: format!("{signed}.{mac}"),
            expires,
            expires_in: self.ttl.as_secs(),
        }
    }

    /// The client id in a valid, unexpired token.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<String, SessionError> {
        let rest = token.strip_prefix(PREFIX).ok_or(SessionError::Malformed)?;
        let (payload, mac) = rest.split_once('.').ok_or(SessionError::Malformed)?;
        let mac = B64.decode(mac).map_err(|_| SessionError::Malformed)?;
        let signed = &token[..PREFIX.len() + payload.len()];
        let verifies = |key: &KeyedHash| key.verify(&[signed.as_bytes()], &mac);
        if !verifies(&self.key) && !self.previous.iter().any(verifies) {
            return Err(SessionError::BadSignature);
        }
        let payload = B64.decode(payload).map_err(|_| SessionError::Malformed)?;
        let payload = String::from_utf8(payload).map_err(|_| SessionError::Malformed)?;
        let (client, expires) = payload.rsplit_once('|').ok_or(SessionError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| SessionError::Malformed)?;
        if epoch(now) >= expires {
            return Err(SessionError::Expired);
        }
        Ok(client.to_string())
    }
}

/// True when `token` has the shape of a session token (so it is not tried as an API key).
pub fn looks_like_session(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &str) -> SessionKeys {
        SessionKeys::new(
            SecretSlice::from(k.as_bytes().to_vec()),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn issue_verify_expire_forge() {
        let now = SystemTime::now();
        let a = keys("key-a-0123456789abcdef0123456789abcdef");
        let b = keys("key-b-0123456789abcdef0123456789abcdef");
        let t = a.issue("web-eu", now);
        assert_eq!(t.expires_in, 3600);
        assert_eq!(a.verify(&t.token, now).unwrap(), "web-eu");
        assert_eq!(b.verify(&t.token, now), Err(SessionError::BadSignature));
        let later = now + Duration::from_secs(3601);
        assert_eq!(a.verify(&t.token, later), Err(SessionError::Expired));
        // Changing the client id in the payload breaks the signature.
        let (_, rest) = t.token.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        let forged = format!("ps1.{}.{mac}", B64.encode(format!("admin|{}", t.expires)));
        assert_eq!(a.verify(&forged, now), Err(SessionError::BadSignature));
        for bad in ["", "ps1.", "ps1.abc", "ps1.abc.def", "xyz"] {
            assert!(a.verify(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_until_they_expire() {
        let now = SystemTime::now();
        let secret = |k: &str| SecretSlice::from(k.as_bytes().to_vec());
        let old = keys("key-a-0123456789abcdef0123456789abcdef");
        let issued_before = old.issue("web-eu", now);
        let rotated = SessionKeys::with_previous(
            secret("key-b-0123456789abcdef0123456789abcdef"),
            &[secret("key-a-0123456789abcdef0123456789abcdef")],
            Duration::from_secs(3600),
        );
        assert_eq!(rotated.verify(&issued_before.token, now).unwrap(), "web-eu");
        let later = now + Duration::from_secs(3601);
        assert_eq!(
            rotated.verify(&issued_before.token, later),
            Err(SessionError::Expired)
        );
        // New tokens are signed with the new key only.
        let issued_after = rotated.issue("web-eu", now);
        assert_eq!(
            old.verify(&issued_after.token, now),
            Err(SessionError::BadSignature)
        );
        let forged = keys("key-c-0123456789abcdef0123456789abcdef").issue("web-eu", now);
        assert_eq!(
            rotated.verify(&forged.token, now),
            Err(SessionError::BadSignature)
        );
    }
}
