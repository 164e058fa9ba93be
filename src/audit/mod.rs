//! Audit log (see README.md, Architecture): durable, HMAC-chained JSON Lines.
//!
//! # Format
//! One record per line, fields in this order: `seq` (from 1, continuing across
//! restarts and rotations), `ts` (UTC, RFC 3339, microseconds), `event`, the
//! [`AuditRecord`] fields (`None` fields left out) or a system event's fields,
//! `key_id`, `prev`, `mac`:
//!
//! ```text
//! {"seq":1,"ts":"2025-01-01T00:00:00.000001Z","event":"payment.forwarded",...,"key_id":"3f…","prev":"000…0","mac":"…"}
//! ```
//!
//! The writer builds the unsigned line L = `{"seq":..,...,"key_id":"<16 hex>","prev":"<hex>"}`,
//! then writes L with its final `}` replaced by `,"mac":"<hex>"}` and a `\n`, where
//! `mac` = lowercase hex HMAC-SHA-256(chain key, L), `key_id` is that key's [`KeyId`]
//! and `prev` is the previous record's `mac` (64 zeros for the first record ever).
//! Changing any byte, removing, inserting or reordering lines makes [`verify_chain`]
//! fail at the first line that no longer verifies, naming the file and the line.
//! (Lines written before records named their key have no `key_id`; they verify with
//! the chain's key at that point.)
//!
//! Records hold card data only as a [`CardSummary`]: there is no field for a
//! PAN or a CVV.
//!
//! # System events and key rotation
//! [`AuditLog::system_event`] writes start, stop, reload and refused-reload records
//! (PCI DSS 10.2.1, [`SystemEvent`]); they have no `request_id`, and
//! [`pending_in`] ignores them. [`AuditLog::rotate_key`] writes `audit.key_rotated`
//! (`old_key_id`, `new_key_id`) signed with the old key, then signs every later record
//! with the new one. A verifier holding several keys follows the chain: it starts on
//! the key the first record names and accepts another only after such a record, so a
//! retired key cannot sign records after the switch. On start, the writer continues a
//! chain whose last record `audit.key` or one of `audit.previous_keys` signed (handing
//! it over to `audit.key` with `audit.key_rotated` first if needed), or that ends with
//! a switch to `audit.key` (see `resume.rs`).
//!
//! # The file: records, then NUL padding
//! The current file is preallocated: NUL bytes (`\0`) are written and synced
//! ahead of the records, and each group of records overwrites the padding after
//! the last one. A record's sync then has no file size to commit (an appending
//! write changes the size, and the sync must write the inode too). So the
//! current file reads as complete record lines followed by NULs up to its end;
//! the records end at the first line that holds a NUL or has no `\n` (a record
//! never holds a NUL). Everything after is the *unwritten tail*: padding, and
//! after a crash possibly bytes of a group that was never acknowledged (a torn
//! record, or sectors written out of order). Rotated files are cut to their last
//! record when rotated: they are plain JSON Lines.
//!
//! With ordinary tools: `tr -d '\0' < FILE` removes the padding and leaves
//! JSON Lines (a torn record left by a crash is then the last line, without its
//! `\n`): pipe that to `jq` or `grep`. Given the padded file itself, jq 1.6
//! reads the records and ignores the padding at the end (not a torn record),
//! and GNU grep stops at the first NUL with "binary file matches" unless given
//! `-a`. `wc -l` counts the records (padding holds no `\n`). [`read_records`]
//! is the same cut in Rust; `payshim audit verify` is the reference reader.
//! The file does not grow with each record: a shipper that follows a file by
//! its size misses records written over padding (README.md, "Card data and the
//! audit log").
//!
//! # Durability
//! [`AuditLog::append`] resolves once the record is written and `fdatasync`ed.
//! A dedicated thread commits records in groups: one write and one sync for
//! all the records queued while the previous group was syncing. If the file
//! cannot be written or synced, the whole group gets [`AuditError::Unavailable`],
//! the log reports unhealthy (the proxy answers 503 and fails readiness), the
//! chain does not advance, and the next attempt first pads over what the failed
//! write left after the last synced record. The writer retries on every new
//! record, and on its own every second while unhealthy, so readiness comes back
//! without traffic. Padding that cannot be written (a full disk) counts as a
//! failed write: records already have their room in the padding written before,
//! and the log becomes unavailable when it needs more and cannot get it.
//!
//! On start, the chain continues from the last complete record of the file (or
//! of the newest rotated file if the current one has none). Record bytes left
//! in the unwritten tail by a crash are padded over with a warning. If the last
//! record does not verify with a configured key (wrong `audit.key`), the log stays
//! unhealthy rather than starting a chain nobody can verify.
//!
//! # Rotation and verification
//! When a record would take the file past `max_file_bytes`, the file is cut to
//! its last record, renamed to `<path>.<N>` (N = 1 + the highest existing N, so
//! `.1` is the oldest), and a new, preallocated `<path>` is started; the chain
//! runs on across files. Verification accepts an unwritten tail in the last
//! file (reporting a torn record), and padding alone in any file. To verify, give the
//! files oldest first and the current file last, as [`chain_files`] lists them:
//!
//! ```text
//! payshim audit verify $(ls -v var/audit/payshim.jsonl.*) var/audit/payshim.jsonl
//! ```
//!
//! (`ls -v` sorts `.2` before `.10`.) Verification starts at the first record
//! ever written, so keep every rotated file that is to be verified with its
//! predecessors.

mod error;
mod file;
mod key;
mod key_id;
mod pending;
mod prealloc;
mod queue;
mod record;
mod resume;
mod rotate;
mod segment;
mod settings;
mod system;
mod verify;
mod writer;

#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use secrecy::{ExposeSecret, SecretSlice};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::error;

pub use self::error::AuditError;
pub use key::{AuditToml, OfflineAudit, load_offline};
pub use key_id::KeyId;
pub use pending::{MaskedCard, Pending, PendingError, PendingReport, pending_in, pending_table};
pub use record::{AuditEvent, AuditRecord, CardSummary, GENESIS_PREV, hex32};
pub use segment::read_records;
pub use settings::AuditSettings;
pub use system::{ReloadTrigger, SystemEvent};
pub use verify::{VerifyError, VerifyReport, verify_chain, verify_files};

use key_id::Signer;
use queue::{CHANNEL_CAPACITY, Msg, Reply, Shared};
use system::SystemRecord;
use writer::Writer;

/// Why [`AuditLog::submit`] did not queue a record.
#[derive(Debug)]
pub enum Submit {
    /// The queue is full: the record, to be appended by waiting instead.
    Full(Box<AuditRecord>),
    /// The log was shut down.
    Closed,
}

/// Counters for the benchmark: `records / syncs` is the mean group size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Records made durable.
    pub records: u64,
    /// Successful `fdatasync` calls on the log file.
    pub syncs: u64,
}

/// A cheap, cloneable handle to the audit writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    stopped: watch::Receiver<()>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("healthy", &self.is_healthy())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log and starts the writer thread.
    ///
    /// Never fails: if the file cannot be opened (missing or unwritable
    /// directory, wrong key for the existing chain), the log starts unhealthy
    /// and keeps retrying.
    pub fn start(settings: AuditSettings) -> AuditLog {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (stopped_tx, stopped) = watch::channel(());
        let shared = Arc::new(Shared::new());
        let mut writer = Writer::new(settings, Arc::clone(&shared));
        writer.open_at_start();
        let spawned = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx, stopped_tx));
        if let Err(e) = spawned {
            // The closure (and with it the receiver) is gone: appends answer Closed.
            shared.healthy.store(false, Ordering::Release);
            error!(error = %e, "cannot start the audit writer thread");
        }
        AuditLog {
            tx,
            shared,
            stopped,
        }
    }

    /// Appends one record. Resolves with its `seq` once it is written and
    /// `fdatasync`ed; `Err` if it could not be made durable.
    ///
    /// Dropping the future after the record was queued does not withdraw it.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Append {
                record: Box::new(record),
                reply: Reply(Some(reply)),
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// Writes a system event (start, stop, reload, another key's rotation) into the
    /// chain; resolves once it is written and `fdatasync`ed.
    pub async fn system_event(&self, event: SystemEvent) -> Result<(), AuditError> {
        let record = Box::new(SystemRecord::from(event));
        self.call(|reply| Msg::System { record, reply }).await
    }

    /// Switches the chain to `new_key`: writes `audit.key_rotated`, signed with the key
    /// in use and naming `new_key`'s id, and signs every later record with `new_key`.
    /// Resolves once that record is durable; on `Err` the chain stays on the old key.
    /// Records queued before this call are signed with the old key.
    pub async fn rotate_key(&self, new_key: SecretSlice<u8>) -> Result<(), AuditError> {
        let signer = Box::new(Signer::new(new_key.expose_secret()));
        self.call(|reply| Msg::RotateKey { signer, reply }).await
    }

    /// Queues the message `make` builds around a reply channel and waits for the answer.
    async fn call(&self, make: impl FnOnce(Reply) -> Msg) -> Result<(), AuditError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(Reply(Some(reply))))
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?.map(|_seq| ())
    }

    /// Queues a record without waiting for it to be durable (rejections, completions):
    /// no task and no wake-up per record. The writer writes it with its group and logs it
    /// if it is lost; records queued before [`AuditLog::shutdown`] are written before the
    /// writer stops. [`Submit::Full`] gives the record back when the queue is full (the
    /// caller then waits with [`AuditLog::append`]).
    pub fn submit(&self, record: AuditRecord) -> Result<(), Submit> {
        let msg = Msg::Append {
            record: Box::new(record),
            reply: Reply(None),
        };
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Msg::Append { record, .. })) => {
                Err(Submit::Full(record))
            }
            Err(_) => Err(Submit::Closed),
        }
    }

    /// `false` after a failed open, write or sync (and after shutdown); `true`
    /// again once a group (or the writer's own retry) succeeds.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> AuditStats {
        AuditStats {
            records: self.shared.records.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }

    /// Writes every record queued so far, then stops the writer thread (for
    /// every clone of this handle: later appends answer [`AuditError::Closed`]).
    pub async fn shutdown(self) {
        // Fails only if the writer is already gone.
        let _ = self.tx.send(Msg::Shutdown).await;
        let mut stopped = self.stopped;
        // The writer thread drops its sender when it ends.
        while stopped.changed().await.is_ok() {}
    }
}

/// The files of the chain at `path` in verification order: `<path>.1`,
/// `<path>.2`, … (numerically), then `<path>` if it exists.
pub fn chain_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotate::rotated_files(path)?
        .into_iter()
        .map(|(_, file)| file)
        .collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}
