//! HMAC-SHA-256, the one keyed hash payshim uses: card fingerprints, the audit chain and
//! session tokens.
//!
//! Keying HMAC hashes the key into its inner and outer pads, two SHA-256 blocks of work.
//! [`KeyedHash`] does that once and keeps the keyed state; each MAC then starts from a copy of
//! it and only hashes the message. The audit writer signs every line this way.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA-256 with its key already absorbed.
///
/// Deliberately without `Debug`: the keyed state is as good as the key for forging MACs.
#[derive(Clone)]
pub(crate) struct KeyedHash(HmacSha256);

impl KeyedHash {
    pub(crate) fn new(key: &[u8]) -> Self {
        // HMAC takes keys of any length; only fixed-size MACs can refuse one.
        Self(HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"))
    }

    /// The MAC of the concatenation of `parts`, from a copy of the keyed state.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.clone().into_mac(parts)
    }

    /// Like [`Self::mac`], for a key used once: no copy of the keyed state is made.
    ///
    /// The parts are fed piece by piece, so no buffer holding a PAN is assembled.
    pub(crate) fn into_mac(self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0;
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `expected` is the MAC of the concatenation of `parts`, compared in constant
    /// time so that a forger learns nothing from how long a wrong guess took to refuse.
    pub(crate) fn verify(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: an independent oracle for the HMAC construction.
    const KEY: &[u8] = b"Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";
    const MAC: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn matches_rfc_4231() {
        let keyed = KeyedHash::new(KEY);
        assert_eq!(hex::encode(keyed.mac(&[DATA])), MAC);
        assert_eq!(hex::encode(KeyedHash::new(KEY).into_mac(&[DATA])), MAC);
    }

    #[test]
    fn parts_are_concatenated_and_the_state_is_reused() {
        let keyed = KeyedHash::new(KEY);
        let split = keyed.mac(&[b"what do ya", b"", b" want for nothing?"]);
        assert_eq!(hex::encode(split), MAC);
        // The keyed state is not consumed: a second MAC starts from the key again.
        assert_eq!(hex::encode(keyed.mac(&[DATA])), MAC);
    }

    #[test]
    fn verify_accepts_only_the_right_mac() {
        let keyed = KeyedHash::new(KEY);
        let mac = hex::decode(MAC).unwrap();
        assert!(keyed.verify(&[b"what do ya want ", b"for nothing?"], &mac));
        assert!(!keyed.verify(&[DATA, b"!"], &mac));
        assert!(!KeyedHash::new(b"other").verify(&[DATA], &mac));
        assert!(!keyed.verify(&[DATA], &mac[..31]));
    }
}
