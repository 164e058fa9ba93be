//! The writer thread: group commit and chain state. The file itself (opening, crash
//! recovery, cutting back a failed write) is handled in `file.rs`, its padding ahead of
//! the records in `prealloc.rs`, rotation in `rotate.rs`.
//!
//! One dedicated std thread owns the file, so `fdatasync` never blocks the async
//! runtime. It blocks for the first queued record, lets the group gather for
//! [`GATHER`], takes everything queued by then, signs the group onto the chain, writes
//! it over the padding after the last record with one positioned write, makes it durable
//! with one `sync_data`, then answers every waiter (handed to the async runtime as one
//! message, see [`Answers`]). The chain only advances for records that were synced.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::error::AuditError;
use super::file::{self, WriteFailure};
use super::key_id::{Keyring, Signer};
use super::prealloc::Prealloc;
use super::queue::{Answers, CHANNEL_CAPACITY, Msg, Reply, Shared};
use super::record::{AuditEvent, AuditRecord, ChainHead, encode_line};
use super::resume::ChainKeys;
use super::rotate;
use super::settings::AuditSettings;
use super::system::SystemRecord;

/// While unhealthy and idle, the writer tries to reopen the file this often.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long the writer lets a group gather after its first record before writing it.
/// Adds as much to a payment's latency, and saves a wake-up per record.
const GATHER: Duration = Duration::from_micros(200);
/// The largest group buffer kept from one group to the next (a group of ~400 payments' records).
const KEPT_CHUNK_BYTES: usize = 256 * 1024;

/// The writer thread's state.
pub(super) struct Writer {
    path: PathBuf,
    max_file_bytes: u64,
    /// Keyed once; each line is signed from a copy of the current key's state.
    keys: ChainKeys,
    shared: Arc<Shared>,
    file: Option<File>,
    /// `None` until read from the files on disk.
    head: Option<ChainHead>,
    /// Where the synced, acknowledged records of the current file end.
    committed_len: u64,
    /// Where a failed write may have left bytes: up to here the padding is restored
    /// before the next write.
    dirty_until: u64,
    prealloc: Prealloc,
    /// The group being written, and who waits for it (kept between groups).
    chunk: Vec<u8>,
    waiting: Vec<(Reply, u64)>,
    /// Where a durable group's waiters are answered from (the runtime, in one piece).
    answers: Answers,
}

struct Pending {
    item: Item,
    reply: Reply,
}

/// What one queued message asks the writer to write.
enum Item {
    Request(Box<AuditRecord>),
    System(Box<SystemRecord>),
    /// Hand the chain over to this key (see [`Msg::RotateKey`]).
    RotateKey(Box<Signer>),
}

impl Item {
    fn event(&self) -> AuditEvent {
        match self {
            Item::Request(record) => record.event,
            Item::System(record) => record.event,
            Item::RotateKey(_) => AuditEvent::AuditKeyRotated,
        }
    }
}

/// Marks the log unhealthy and releases `shutdown` waiters when the thread ends, panics included.
struct ExitGuard {
    shared: Arc<Shared>,
    _stopped: watch::Sender<()>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.shared.healthy.store(false, Ordering::Release);
    }
}

impl Writer {
    pub(super) fn new(settings: AuditSettings, shared: Arc<Shared>) -> Self {
        let keys = ChainKeys {
            current: Signer::new(settings.key.expose_secret()),
            previous: Keyring::new(settings.previous_keys.iter().map(|k| k.expose_secret())),
        };
        Self {
            path: settings.path,
            max_file_bytes: settings.max_file_bytes,
            keys,
            shared,
            file: None,
            head: None,
            committed_len: 0,
            dirty_until: 0,
            prealloc: Prealloc::default(),
            chunk: Vec::new(),
            waiting: Vec::new(),
            // Made on the caller's thread, which knows the runtime.
            answers: Answers::start(),
        }
    }

    /// Opens the log before the thread starts, so `is_healthy` is right from the start.
    pub(super) fn open_at_start(&mut self) {
        match self.ensure_ready() {
            Ok(head) => info!(
                path = %self.path.display(),
                next_seq = head.next_seq,
                "audit log open"
            ),
            Err(failure) => self.mark_unhealthy(&failure),
        }
    }

    pub(super) fn run(self, mut rx: mpsc::Receiver<Msg>, stopped: watch::Sender<()>) {
        let _guard = ExitGuard {
            shared: Arc::clone(&self.shared),
            _stopped: stopped,
        };
        let mut writer = self;
        // Only used to wait for a record with a timeout while unhealthy.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .inspect_err(
                |e| warn!(error = %e, "audit writer: no timer; retries only on new records"),
            )
            .ok();
        let mut closing = false;
        // Reused from group to group, as are the writer's buffers: memory freed between
        // groups would be handed back and faulted in again for the next one.
        let mut group = Vec::new();
        loop {
            let first = if closing {
                rx.try_recv().ok()
            } else {
                writer.next_message(&mut rx, timer.as_ref())
            };
            let Some(first) = first else { break };
            if !closing && matches!(first, Msg::Append { .. }) {
                // Let the group gather without being woken for each record: every wake-up is
                // a context switch, and on a core shared with the runtime they cost more
                // than the fdatasync (bench/README.md).
                std::thread::sleep(GATHER);
            }
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Append { record, reply } => group.push(Pending {
                        item: Item::Request(record),
                        reply,
                    }),
                    Msg::System { record, reply } => group.push(Pending {
                        item: Item::System(record),
                        reply,
                    }),
                    Msg::RotateKey { signer, reply } => group.push(Pending {
                        item: Item::RotateKey(signer),
                        reply,
                    }),
                    Msg::Shutdown => {
                        if !closing {
                            closing = true;
                            // Refuse new records; the ones already queued are still written.
                            rx.close();
                        }
                    }
                }
                next = if group.len() < CHANNEL_CAPACITY {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !group.is_empty() {
                writer.commit_group(&mut group);
            }
        }
        drop(writer);
        debug!("audit writer stopped");
    }

    /// The next message; `None` once every handle is gone (or the channel is closed and drained).
    fn next_message(
        &mut self,
        rx: &mut mpsc::Receiver<Msg>,
        timer: Option<&tokio::runtime::Runtime>,
    ) -> Option<Msg> {
        loop {
            let timer = match timer {
                Some(timer) if !self.shared.healthy.load(Ordering::Acquire) => timer,
                _ => return rx.blocking_recv(),
            };
            // The timer must be created inside the runtime, hence the async block.
            match timer.block_on(async { tokio::time::timeout(RETRY_INTERVAL, rx.recv()).await }) {
                Ok(msg) => return msg,
                Err(_elapsed) => self.probe(),
            }
        }
    }

    /// While unhealthy and idle: can the file be opened and synced again?
    fn probe(&mut self) {
        let result = self.ensure_ready().and_then(|_| match self.file.as_ref() {
            Some(file) => file.sync_data().map_err(WriteFailure::from),
            None => Err(io::Error::other("audit file not open").into()),
        });
        match result {
            Ok(()) => {
                if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                    info!(path = %self.path.display(), "audit log writable again");
                }
            }
            Err(failure) => {
                self.file = None;
                debug!(path = %self.path.display(), error = %failure, "audit log still unavailable");
            }
        }
    }

    fn mark_unhealthy(&mut self, failure: &WriteFailure) {
        self.file = None;
        if self.shared.healthy.swap(false, Ordering::AcqRel) {
            error!(
                path = %self.path.display(),
                error = %failure,
                "audit log unavailable: records are refused until it can be written again"
            );
        } else {
            debug!(path = %self.path.display(), error = %failure, "audit log still unavailable");
        }
    }

    /// Writes and syncs the records of `group` (left empty), in the writer's reused buffers.
    fn commit_group(&mut self, group: &mut Vec<Pending>) {
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut waiting = std::mem::take(&mut self.waiting);
        chunk.clear();
        self.write_group(group, &mut chunk, &mut waiting);
        // A burst's buffer is not kept: an idle writer holds at most this much.
        chunk.shrink_to(KEPT_CHUNK_BYTES);
        self.chunk = chunk;
        self.waiting = waiting;
    }

    fn write_group(
        &mut self,
        group: &mut Vec<Pending>,
        chunk: &mut Vec<u8>,
        waiting: &mut Vec<(Reply, u64)>,
    ) {
        let mut head = match self.ensure_ready() {
            Ok(head) => head,
            Err(failure) => {
                self.mark_unhealthy(&failure);
                fail_all(group.drain(..).map(|p| p.reply));
                return;
            }
        };
        let mut signer = self.keys.current.clone();
        let handover = self.handover(&head).map(|item| Pending {
            item,
            reply: Reply(None),
        });
        if let Some(from) = head.key.as_ref().and_then(|id| self.keys.previous.get(id)) {
            // The chain is still on a previous key: that key signs the handover.
            signer = from.clone();
        }
        let mut pending = handover.into_iter().chain(group.drain(..));
        while let Some(Pending { item, reply }) = pending.next() {
            let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
            let seq = head.next_seq;
            let encoded = match &item {
                Item::Request(record) => encode_line(&signer, seq, &ts, record, &head.prev),
                Item::System(record) => encode_line(&signer, seq, &ts, record, &head.prev),
                Item::RotateKey(next) => {
                    let record =
                        SystemRecord::chain_key_rotated(signer.id.as_str(), next.id.as_str());
                    encode_line(&signer, seq, &ts, &record, &head.prev)
                }
            };
            let (line, mac) = match encoded {
                Ok(encoded) => encoded,
                Err(e) => {
                    error!(error = %e, event = %item.event(), "audit record cannot be serialized");
                    reply.send(Err(AuditError::Unavailable));
                    continue;
                }
            };
            let used = self.committed_len + chunk.len() as u64;
            if used > 0 && used + line.len() as u64 > self.max_file_bytes {
                // The current file is full: make what it got durable, then rotate.
                if !chunk.is_empty() {
                    if let Err(e) = self.write_chunk(chunk) {
                        self.mark_unhealthy(&e.into());
                        fail_all(waiting.drain(..).map(|(reply, _)| reply));
                        fail_all(std::iter::once(reply).chain(pending.map(|p| p.reply)));
                        return;
                    }
                    self.commit(head.clone(), &signer, waiting);
                    chunk.clear();
                }
                if let Err(e) = self.rotate() {
                    self.mark_unhealthy(&e.into());
                    fail_all(std::iter::once(reply).chain(pending.map(|p| p.reply)));
                    return;
                }
            }
            chunk.extend_from_slice(&line);
            waiting.push((reply, seq));
            if let Item::RotateKey(next) = item {
                signer = *next;
            }
            head = ChainHead {
                next_seq: seq + 1,
                prev: mac,
                key: Some(signer.id),
            };
        }
        if !chunk.is_empty() {
            if let Err(e) = self.write_chunk(chunk) {
                self.mark_unhealthy(&e.into());
                fail_all(waiting.drain(..).map(|(reply, _)| reply));
                return;
            }
            self.commit(head, &signer, waiting);
            if let Some(file) = &self.file {
                self.prealloc
                    .ahead(file, self.committed_len, self.max_file_bytes);
            }
        }
    }

    /// When the chain on disk is still signed with a previous key (rotated across a
    /// restart), the record that hands it over to the current key.
    fn handover(&self, head: &ChainHead) -> Option<Item> {
        match &head.key {
            Some(id) if *id != self.keys.current.id => {
                info!(from = %id, to = %self.keys.current.id, "audit chain key rotated");
                Some(Item::RotateKey(Box::new(self.keys.current.clone())))
            }
            _ => None,
        }
    }

    /// The records in `waiting` are durable: advance the chain and answer them.
    /// `signer` is the key the chain is on after them.
    fn commit(&mut self, head: ChainHead, signer: &Signer, waiting: &mut Vec<(Reply, u64)>) {
        self.head = Some(head);
        if signer.id != self.keys.current.id {
            self.keys.current = signer.clone();
        }
        // Before answering, so a caller that got Ok also sees the log healthy.
        if !self.shared.healthy.swap(true, Ordering::AcqRel) {
            info!(path = %self.path.display(), "audit log writable again");
        }
        self.shared
            .records
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        self.answers.durable(waiting.drain(..));
    }

    /// One positioned write over the padding and one `sync_data`. On failure the handle is
    /// dropped, and the next [`Self::ensure_ready`] pads over what the write left.
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            return Err(io::Error::other("audit file not open"));
        };
        let (at, end) = (self.committed_len, self.committed_len + chunk.len() as u64);
        self.prealloc.ensure(&file, end, self.max_file_bytes)?;
        self.dirty_until = self.dirty_until.max(end);
        #[cfg(test)]
        if self.shared.fail_next_write.swap(false, Ordering::AcqRel) {
            file.write_all_at(&chunk[..chunk.len() / 2], at)?;
            return Err(io::Error::other("injected write failure"));
        }
        file.write_all_at(chunk, at)?;
        file.sync_data()?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.committed_len += chunk.len() as u64;
        self.file = Some(file);
        Ok(())
    }

    /// Cuts the padding off the full file, renames it to `<path>.<N>` (N = 1 + highest
    /// existing) and opens a new, preallocated one.
    fn rotate(&mut self) -> io::Result<()> {
        self.prealloc.wait();
        let Some(file) = self.file.take() else {
            return Err(io::Error::other("audit file not open"));
        };
        // A rotated file is plain JSON Lines: only the current file carries padding.
        file.set_len(self.committed_len)?;
        file.sync_all()?;
        drop(file);
        let target = rotate::rename_aside(&self.path)?;
        self.committed_len = 0;
        self.dirty_until = 0;
        info!(from = %self.path.display(), to = %target.display(), "audit log rotated");
        // Syncing the directory (in file::open) makes the rename and the new file durable.
        let file = file::open(&self.path)?;
        self.prealloc = Prealloc::opened(file.metadata()?.len());
        self.prealloc.ensure(&file, 1, self.max_file_bytes)?;
        self.prealloc.ahead(&file, 0, self.max_file_bytes);
        self.file = Some(file);
        Ok(())
    }

    /// Opens the file if needed (recovering the chain head the first time, or padding
    /// over what a failed group left), and returns the chain head.
    fn ensure_ready(&mut self) -> Result<ChainHead, WriteFailure> {
        if let (Some(_), Some(head)) = (&self.file, &self.head) {
            return Ok(head.clone());
        }
        self.prealloc.wait();
        let file = file::open(&self.path)?;
        let len = file.metadata()?.len();
        let head = match self.head.clone() {
            Some(head) => {
                self.committed_len =
                    file::cut_back(&self.path, &file, len, self.committed_len, self.dirty_until)?;
                head
            }
            None => {
                let (head, end) = file::recover(&self.path, &self.keys, &file)?;
                self.committed_len = end;
                self.head = Some(head.clone());
                head
            }
        };
        self.dirty_until = self.committed_len;
        // Padding for the first group: a disk too full for it makes the log unavailable now.
        self.prealloc = Prealloc::opened(len);
        #[cfg(test)]
        if self.shared.fail_prealloc.load(Ordering::Acquire) {
            return Err(io::Error::other("injected preallocation failure: disk full").into());
        }
        self.prealloc
            .ensure(&file, self.committed_len + 1, self.max_file_bytes)?;
        self.prealloc
            .ahead(&file, self.committed_len, self.max_file_bytes);
        self.file = Some(file);
        Ok(head)
    }
}

fn fail_all(replies: impl Iterator<Item = Reply>) {
    for reply in replies {
        reply.send(Err(AuditError::Unavailable));
    }
}
