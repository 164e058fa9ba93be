//! A hasher for maps keyed by card fingerprints.
//!
//! Fingerprints are HMAC-SHA-256 outputs under the audit key (see README.md, Architecture):
//! already uniformly spread, and nobody without the key can choose one that lands in a
//! given bucket. Hashing them again with SipHash (the std default, there to resist
//! attacker-chosen keys) only costs time on every payment, so these maps take 64 of the
//! fingerprint's bits as the hash. Maps keyed by values a client chooses (order ids, IPs,
//! client ids) keep the std hasher.

use std::hash::{BuildHasher, Hasher};

/// A card fingerprint as a local map key: its first 16 bytes. 128 bits of HMAC output
/// keep cards apart as well as 256 (a collision would need the audit key to aim), and a
/// smaller key means a smaller map entry: every payment inserts a card these maps have not
/// seen, and those inserts are mostly cache misses.
pub(super) fn card_key(fingerprint: &[u8; 32]) -> u128 {
    u128::from_le_bytes(fingerprint[..16].try_into().expect("16 bytes"))
}

/// A stand-in fingerprint for tests: uniform bytes, like the HMAC outputs of production.
#[cfg(test)]
pub(super) fn fp(i: u32) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(i.to_le_bytes()).into()
}

/// [`BuildHasher`] for fingerprint keys (`[u8; 32]` or [`card_key`]); see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FingerprintHash;

impl BuildHasher for FingerprintHash {
    type Hasher = FingerprintHasher;

    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher(0)
    }
}

/// Folds whatever it is fed into 64 bits by XOR of little-endian words; for a fingerprint
/// (plus the slice length `Hash` writes first) that is as uniform as the fingerprint.
#[derive(Debug)]
pub(super) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.0 ^= u64::from_le_bytes(w.try_into().expect("chunks of 8"));
        }
        for (i, b) in words.remainder().iter().enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // The length prefix of a slice: the same for every fingerprint, so it only needs
        // to change the value, not spread it.
        self.0 = self.0.rotate_left(5) ^ n as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hash(key: &[u8; 32]) -> u64 {
        FingerprintHash.hash_one(key)
    }

    #[test]
    fn equal_keys_hash_equal_and_any_byte_changes_the_hash() {
        let a = [7u8; 32];
        assert_eq!(hash(&a), hash(&[7u8; 32]));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 1;
            assert_ne!(hash(&a), hash(&b), "byte {i}");
        }
    }

    #[test]
    fn uniform_keys_spread_over_buckets() {
        // HMAC outputs stand-in: SHA-256 of a counter.
        use sha2::{Digest, Sha256};
        let buckets: HashSet<u64> = (0u32..4096)
            .map(|i| {
                let fp: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
                hash(&fp) & 1023
            })
            .collect();
        // 4096 uniform draws into 1024 buckets leave ~2% empty; a broken hasher far more.
        assert!(
            buckets.len() > 950,
            "{} of 1024 buckets used",
            buckets.len()
        );
    }
}
