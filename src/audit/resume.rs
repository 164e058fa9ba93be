//! Where the chain continues after a start: which key signed the last record, and which
//! key must sign the next one.
//!
//! The last line is accepted when it verifies with `audit.key`, or with one of
//! `audit.previous_keys` (the operator rotated the key across a restart: the writer then
//! first writes `audit.key_rotated`, signed with that previous key and naming the current
//! one), or when it is an `audit.key_rotated` record handing the chain to `audit.key`
//! (a crash right after a live rotation: its mac needs the old key, which may be gone;
//! `payshim audit verify` with both keys still checks it). Anything else (a wrong key, a
//! changed line) leaves the log unhealthy, as no one could verify what would follow.

use super::key_id::{KeyId, Keyring, Signer};
use super::record::{ChainHead, SignedLine, parse_line};

/// The writer's keys: the one it signs with, and the ones the chain may still be on.
#[derive(Clone)]
pub(super) struct ChainKeys {
    pub current: Signer,
    pub previous: Keyring,
}

impl ChainKeys {
    /// The signer for `id`: the current key or a previous one.
    pub(super) fn get(&self, id: &KeyId) -> Option<&Signer> {
        if *id == self.current.id {
            Some(&self.current)
        } else {
            self.previous.get(id)
        }
    }
}

/// The head after the chain's last complete `line`, or why the writer cannot continue it.
/// The message names keys only by id.
pub(super) fn head_after(keys: &ChainKeys, line: &[u8]) -> Result<ChainHead, String> {
    let parsed = parse_line(line).map_err(|e| e.to_string())?;
    let (signed, signer): (SignedLine, KeyId) = match parsed.key_id() {
        Some(id) => match keys.get(id) {
            Some(signer) => (
                parsed.verify(&signer.hash).map_err(|e| e.to_string())?,
                signer.id,
            ),
            None if parsed.switches_to() == Some(&keys.current.id) => {
                let id = *id;
                (parsed.unverified(), id)
            }
            None => {
                return Err(format!(
                    "signed by key id {id}, which is neither audit.key (key id {}) nor one \
                     of audit.previous_keys",
                    keys.current.id
                ));
            }
        },
        // Written before records named their key: whichever configured key verifies it.
        None => std::iter::once(&keys.current)
            .chain(keys.previous.iter())
            .find_map(|s| parsed.verify(&s.hash).ok().map(|l| (l, s.id)))
            .ok_or_else(|| "bad mac".to_string())?,
    };
    let head = ChainHead::after(&signed, Some(&signer)).ok_or("seq is at its maximum")?;
    match &head.key {
        Some(next) if keys.get(next).is_none() => Err(format!(
            "the chain was handed over to key id {next} (audit.key_rotated), which is neither \
             audit.key (key id {}) nor one of audit.previous_keys",
            keys.current.id
        )),
        _ => Ok(head),
    }
}
