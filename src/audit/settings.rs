//! The writer's settings, in a file of their own so that the writer can read them without
//! importing the module root that drives it.

use std::path::PathBuf;

/// Where and how the log is written.
#[derive(Debug)]
pub struct AuditSettings {
    /// The current file, e.g. `var/audit/payshim.jsonl`; its directory is created if missing.
    pub path: PathBuf,
    /// HMAC key of the chain (and of card fingerprints).
    pub key: secrecy::SecretSlice<u8>,
    /// Rotation size. A record is never split: a file only goes past this size
    /// when a single record is larger.
    pub max_file_bytes: u64,
}

impl AuditSettings {
    /// 64 MiB.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
}
