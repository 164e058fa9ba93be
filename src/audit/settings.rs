//! The writer's settings, in a file of their own so that the writer can read them without
//! importing the module root that drives it.

use std::path::PathBuf;

/// Where and how the log is written.
#[derive(Debug)]
pub struct AuditSettings {
    /// The current file, e.g. `var/audit/payshim.jsonl`; its directory is created if missing.
    pub path: PathBuf,
    /// HMAC key of the chain: every record is signed with it.
    pub key: secrecy::SecretSlice<u8>,
    /// Keys the chain may have been signed with before (`audit.previous_keys`): the last
    /// record on disk may be signed with one of them, and the writer then hands the chain
    /// over to `key` with an `audit.key_rotated` record (see `resume.rs`).
    pub previous_keys: Vec<secrecy::SecretSlice<u8>>,
    /// Rotation size. A record is never split: a file only goes past this size
    /// when a single record is larger.
    pub max_file_bytes: u64,
}

impl AuditSettings {
    /// 64 MiB.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
}
