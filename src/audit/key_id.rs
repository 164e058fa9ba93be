//! Key ids: which key signed a record, named without revealing the key.
//!
//! Every record carries the id of the key that signed it (`key_id`), and a key rotation
//! record names the old and the new key by id, so an auditor holding several keys knows
//! which one each record needs, and a verifier knows when the chain may switch keys.
//! The id is the first 16 hex digits of SHA-256 over a fixed label and the key: it cannot
//! be turned back into the key, and is no help in forging a MAC.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::keyed::KeyedHash;

/// Domain separation: the id is never the hash of the bare key, which some other system
/// might publish for its own reasons.
const LABEL: &[u8] = b"payshim key id v1\0";
/// Hex digits kept: 64 bits, enough to tell a shop's keys apart.
const ID_HEX_LEN: usize = 16;

/// The public name of a key: 16 lowercase hex digits, kept inline so that naming the key
/// of every record costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; ID_HEX_LEN]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &[u8]) -> KeyId {
        let digest = Sha256::new()
            .chain_update(LABEL)
            .chain_update(key)
            .finalize();
        let mut hex = [0u8; ID_HEX_LEN];
        hex::encode_to_slice(&digest[..ID_HEX_LEN / 2], &mut hex).expect("8 bytes fill 16 hex");
        KeyId(hex)
    }

    /// An id read from a record; `None` unless it has the shape of one.
    pub(super) fn parse(text: &str) -> Option<KeyId> {
        let bytes: [u8; ID_HEX_LEN] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(KeyId(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a key id is hex")
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chain key, absorbed once, with its id.
#[derive(Clone)]
pub(super) struct Signer {
    pub id: KeyId,
    pub hash: KeyedHash,
}

impl Signer {
    pub(super) fn new(key: &[u8]) -> Signer {
        Signer {
            id: KeyId::of(key),
            hash: KeyedHash::new(key),
        }
    }
}

/// The keys a reader of the chain holds, looked up by id.
#[derive(Clone, Default)]
pub(super) struct Keyring {
    signers: Vec<Signer>,
}

impl Keyring {
    pub(super) fn new<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Keyring {
        let mut ring = Keyring::default();
        for key in keys {
            let signer = Signer::new(key);
            if ring.get(&signer.id).is_none() {
                ring.signers.push(signer);
            }
        }
        ring
    }

    pub(super) fn get(&self, id: &KeyId) -> Option<&Signer> {
        self.signers.iter().find(|s| &s.id == id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Signer> {
        self.signers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_stable_distinct_and_not_the_key_hash() {
        let a = KeyId::of(b"payshim test audit key, 32 bytes");
        assert_eq!(a.as_str().len(), 16);
        assert_eq!(a, KeyId::of(b"payshim test audit key, 32 bytes"));
        assert_ne!(a, KeyId::of(b"payshim test audit key, 32 byteS"));
        let bare = hex::encode(Sha256::digest(b"payshim test audit key, 32 bytes"));
        assert!(!bare.starts_with(a.as_str()));
        // A fixed vector, so the id an auditor sees never changes between versions.
        let label_and_key = [LABEL, b"k"].concat();
        let expected = hex::encode(&Sha256::digest(&label_and_key)[..8]);
        assert_eq!(KeyId::of(b"k").as_str(), expected);
    }

    #[test]
    fn parse_takes_only_16_lowercase_hex_digits() {
        let id = KeyId::of(b"k");
        assert_eq!(KeyId::parse(id.as_str()), Some(id));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        assert_eq!(KeyId::parse(&id.as_str().to_uppercase()), None);
        assert_eq!(KeyId::parse(&id.as_str()[1..]), None);
        assert_eq!(KeyId::parse("zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn keyring_finds_keys_by_id_once() {
        let ring = Keyring::new([&b"one"[..], b"two", b"one"]);
        assert_eq!(ring.iter().count(), 2);
        assert!(ring.get(&KeyId::of(b"two")).is_some());
        assert!(ring.get(&KeyId::of(b"three")).is_none());
    }
}
