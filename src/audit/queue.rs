//! What passes between the [`AuditLog`](super::AuditLog) handles and the writer thread: the
//! queued messages, where each record's outcome goes, and the state both sides read.

use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::oneshot;
use tracing::error;

use super::error::AuditError;
use super::key_id::Signer;
use super::record::AuditRecord;
use super::system::SystemRecord;

/// Capacity of the queue in front of the writer; also the largest group.
pub(super) const CHANNEL_CAPACITY: usize = 16_384;

/// Where a record's outcome goes: the caller waiting for it to be durable, or nobody for
/// records submitted without waiting (a lost one is then logged here, and the log being
/// unhealthy already stops further payments).
pub(super) struct Reply(pub Option<oneshot::Sender<Result<u64, AuditError>>>);

impl Reply {
    pub(super) fn send(self, outcome: Result<u64, AuditError>) {
        match (self.0, outcome) {
            (Some(waiting), outcome) => {
                // The caller may have gone away; the record's fate no longer matters to it.
                let _ = waiting.send(outcome);
            }
            (None, Err(e)) => error!(error = %e, "audit record lost"),
            (None, Ok(_)) => {}
        }
    }
}

pub(super) enum Msg {
    /// Boxed: a record is large next to the other variant.
    Append {
        record: Box<AuditRecord>,
        reply: Reply,
    },
    /// A system event (start, stop, reload): see [`SystemEvent`](super::SystemEvent).
    System {
        record: Box<SystemRecord>,
        reply: Reply,
    },
    /// Switch the chain to a new key: `audit.key_rotated`, signed with the old key and
    /// naming the new one, then every later record signed with the new key.
    RotateKey { signer: Box<Signer>, reply: Reply },
    /// Write what is queued, then stop.
    Shutdown,
}

/// State shared between the handles and the writer thread.
#[derive(Debug)]
pub(super) struct Shared {
    pub healthy: AtomicBool,
    /// Records made durable.
    pub records: AtomicU64,
    /// Successful `sync_data` calls on the log file.
    pub syncs: AtomicU64,
    /// Test hook: the next write stops half-way and fails.
    #[cfg(test)]
    pub fail_next_write: AtomicBool,
    /// Test hook: opening the file fails as if the disk were too full to preallocate it.
    #[cfg(test)]
    pub fail_prealloc: AtomicBool,
}

impl Shared {
    pub(super) fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            records: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_next_write: AtomicBool::new(false),
            #[cfg(test)]
            fail_prealloc: AtomicBool::new(false),
        }
    }
}
