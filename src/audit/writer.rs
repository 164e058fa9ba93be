//! The writer thread: group commit, chain state, crash recovery and rotation.
//!
//! One dedicated std thread owns the file, so `fdatasync` never blocks the async
//! runtime. It blocks for the first queued record, lets the group gather for
//! [`GATHER`], takes everything queued by then, signs the group onto the chain, writes
//! it with one `write_all`, makes it durable with one `sync_data`, then answers every
//! waiter. The chain only advances for records that were synced.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::record::{AuditRecord, ChainHead, check_line, encode_line};
use super::{AuditError, AuditSettings};
use crate::keyed::KeyedHash;

/// Capacity of the queue in front of the writer; also the largest group.
pub(super) const CHANNEL_CAPACITY: usize = 16_384;
/// While unhealthy and idle, the writer tries to reopen the file this often.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long the writer lets a group gather after its first record before writing it.
/// Adds as much to a payment's latency, and saves a wake-up per record.
const GATHER: Duration = Duration::from_micros(200);
/// Longest last line recovery reads back before giving up on the file.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Where a record's outcome goes: the caller waiting for it to be durable, or nobody for
/// records submitted without waiting (a lost one is then logged here, and the log being
/// unhealthy already stops further payments).
pub(super) struct Reply(pub Option<oneshot::Sender<Result<u64, AuditError>>>);

impl Reply {
    fn send(self, outcome: Result<u64, AuditError>) {
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
}

impl Shared {
    pub fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            records: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_next_write: AtomicBool::new(false),
        }
    }
}

#[derive(thiserror::Error, Debug)]
enum WriteFailure {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "the last record of {} does not verify ({what}): wrong audit key, or the file was \
         changed; run `payshim audit verify`, or move the files aside to start a new chain",
        .path.display()
    )]
    BadTail { path: PathBuf, what: String },
}

/// The writer thread's state.
pub(super) struct Writer {
    path: PathBuf,
    max_file_bytes: u64,
    /// Keyed once; each line is signed from a copy of this state.
    key: KeyedHash,
    shared: Arc<Shared>,
    file: Option<File>,
    /// `None` until read from the files on disk.
    head: Option<ChainHead>,
    /// Length of the current file holding only synced, acknowledged records.
    committed_len: u64,
}

struct Pending {
    record: Box<AuditRecord>,
    reply: Reply,
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
    pub fn new(settings: AuditSettings, shared: Arc<Shared>) -> Self {
        let key = KeyedHash::new(settings.key.expose_secret());
        Self {
            path: settings.path,
            max_file_bytes: settings.max_file_bytes,
            key,
            shared,
            file: None,
            head: None,
            committed_len: 0,
        }
    }

    /// Opens the log before the thread starts, so `is_healthy` is right from the start.
    pub fn open_at_start(&mut self) {
        match self.ensure_ready() {
            Ok(head) => info!(
                path = %self.path.display(),
                next_seq = head.next_seq,
                "audit log open"
            ),
            Err(failure) => self.mark_unhealthy(&failure),
        }
    }

    pub fn run(self, mut rx: mpsc::Receiver<Msg>, stopped: watch::Sender<()>) {
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
            let mut group = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Append { record, reply } => group.push(Pending { record, reply }),
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
                writer.commit_group(group);
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

    fn commit_group(&mut self, group: Vec<Pending>) {
        let mut head = match self.ensure_ready() {
            Ok(head) => head,
            Err(failure) => {
                self.mark_unhealthy(&failure);
                fail_all(group.into_iter().map(|p| p.reply));
                return;
            }
        };
        let mut chunk = Vec::with_capacity(group.len() * 512);
        let mut waiting: Vec<(Reply, u64)> = Vec::with_capacity(group.len());
        let mut pending = group.into_iter();
        while let Some(Pending { record, reply }) = pending.next() {
            let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
            let (line, mac) = match encode_line(&self.key, head.next_seq, &ts, &record, &head.prev)
            {
                Ok(encoded) => encoded,
                Err(e) => {
                    error!(error = %e, event = %record.event, "audit record cannot be serialized");
                    reply.send(Err(AuditError::Unavailable));
                    continue;
                }
            };
            let used = self.committed_len + chunk.len() as u64;
            if used > 0 && used + line.len() as u64 > self.max_file_bytes {
                // The current file is full: make what it got durable, then rotate.
                if !chunk.is_empty() {
                    if let Err(e) = self.write_chunk(&chunk) {
                        self.mark_unhealthy(&e.into());
                        fail_all(waiting.into_iter().map(|(reply, _)| reply));
                        fail_all(std::iter::once(reply).chain(pending.map(|p| p.reply)));
                        return;
                    }
                    self.commit(head.clone(), &mut waiting);
                    chunk.clear();
                }
                if let Err(e) = self.rotate() {
                    self.mark_unhealthy(&e.into());
                    fail_all(std::iter::once(reply).chain(pending.map(|p| p.reply)));
                    return;
                }
            }
            chunk.extend_from_slice(&line);
            waiting.push((reply, head.next_seq));
            head = ChainHead {
                next_seq: head.next_seq + 1,
                prev: mac,
            };
        }
        if !chunk.is_empty() {
            if let Err(e) = self.write_chunk(&chunk) {
                self.mark_unhealthy(&e.into());
                fail_all(waiting.into_iter().map(|(reply, _)| reply));
                return;
            }
            self.commit(head, &mut waiting);
        }
    }

    /// The records in `waiting` are durable: advance the chain and answer them.
    fn commit(&mut self, head: ChainHead, waiting: &mut Vec<(Reply, u64)>) {
        self.head = Some(head);
        // Before answering, so a caller that got Ok also sees the log healthy.
        if !self.shared.healthy.swap(true, Ordering::AcqRel) {
            info!(path = %self.path.display(), "audit log writable again");
        }
        self.shared
            .records
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        for (reply, seq) in waiting.drain(..) {
            reply.send(Ok(seq));
        }
    }

    /// One `write_all` and one `sync_data`. On failure the handle is dropped, and
    /// the next [`Self::ensure_ready`] cuts the file back to `committed_len`.
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("audit file not open"));
        };
        #[cfg(test)]
        if self.shared.fail_next_write.swap(false, Ordering::AcqRel) {
            file.write_all(&chunk[..chunk.len() / 2])?;
            return Err(io::Error::other("injected write failure"));
        }
        file.write_all(chunk)?;
        file.sync_data()?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.committed_len += chunk.len() as u64;
        self.file = Some(file);
        Ok(())
    }

    /// Renames the full file to `<path>.<N>` (N = 1 + highest existing) and opens a new one.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let next = rotated_files(&self.path)?.last().map_or(0, |(n, _)| *n) + 1;
        let target = rotated_path(&self.path, next);
        fs::rename(&self.path, &target)?;
        self.committed_len = 0;
        info!(from = %self.path.display(), to = %target.display(), "audit log rotated");
        // Syncing the directory (in open_file) makes the rename and the new file durable.
        self.file = Some(self.open_file()?);
        Ok(())
    }

    /// Opens the file if needed (recovering the chain head the first time, or cutting
    /// off what a failed group left), and returns the chain head.
    fn ensure_ready(&mut self) -> Result<ChainHead, WriteFailure> {
        if let (Some(_), Some(head)) = (&self.file, &self.head) {
            return Ok(head.clone());
        }
        let mut file = self.open_file()?;
        let len = file.metadata()?.len();
        let head = match self.head.clone() {
            Some(head) => {
                if len > self.committed_len {
                    warn!(
                        path = %self.path.display(),
                        bytes = len - self.committed_len,
                        "audit log: removing the unacknowledged end of a failed write"
                    );
                    file.set_len(self.committed_len)?;
                } else if len < self.committed_len {
                    warn!(
                        path = %self.path.display(),
                        "audit log is shorter than what was written: it was replaced or cut \
                         outside payshim; the chain continues from the last record written"
                    );
                    self.committed_len = len;
                }
                head
            }
            None => {
                let (head, len) = self.recover(&mut file, len)?;
                self.committed_len = len;
                self.head = Some(head.clone());
                head
            }
        };
        self.file = Some(file);
        Ok(head)
    }

    /// Reads the chain head from the last complete line, cutting off an incomplete one.
    fn recover(&self, file: &mut File, len: u64) -> Result<(ChainHead, u64), WriteFailure> {
        let tail = read_tail(file, len)?;
        if tail.complete_len < len {
            warn!(
                path = %self.path.display(),
                bytes = len - tail.complete_len,
                "audit log ends with an incomplete line (crash during a write?): removing it"
            );
            file.set_len(tail.complete_len)?;
        }
        let last = match tail.last_line {
            Some(line) => Some((self.path.clone(), line)),
            None => self.last_rotated_line()?,
        };
        let head = match last {
            None => ChainHead::genesis(),
            Some((path, line)) => {
                let signed = check_line(&self.key, &line).map_err(|e| WriteFailure::BadTail {
                    path: path.clone(),
                    what: e.to_string(),
                })?;
                ChainHead::after(&signed).ok_or(WriteFailure::BadTail {
                    path,
                    what: "seq is at its maximum".into(),
                })?
            }
        };
        Ok((head, tail.complete_len))
    }

    /// The current file has no record (new, or a crash right after a rotation):
    /// the chain continues from the newest rotated file.
    fn last_rotated_line(&self) -> io::Result<Option<(PathBuf, Vec<u8>)>> {
        for (_, path) in rotated_files(&self.path)?.into_iter().rev() {
            let mut file = File::open(&path)?;
            let len = file.metadata()?.len();
            if let Some(line) = read_tail(&mut file, len)?.last_line {
                return Ok(Some((path, line)));
            }
        }
        Ok(None)
    }

    fn open_file(&self) -> io::Result<File> {
        let dir = parent_dir(&self.path);
        fs::create_dir_all(dir)?;
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&self.path)?;
        sync_dir(dir)?;
        Ok(file)
    }
}

fn fail_all(replies: impl Iterator<Item = Reply>) {
    for reply in replies {
        reply.send(Err(AuditError::Unavailable));
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes directory entries (a new file, a rename) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(super) fn rotated_path(path: &Path, n: u64) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `<path>.<N>` files, sorted by N (oldest first).
pub(super) fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    let entries = match fs::read_dir(parent_dir(path)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(suffix) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = suffix.parse::<u64>() {
            found.push((n, rotated_path(path, n)));
        }
    }
    found.sort_unstable();
    Ok(found)
}

struct Tail {
    /// Length up to and including the last `\n`.
    complete_len: u64,
    /// The last complete line, without its `\n`.
    last_line: Option<Vec<u8>>,
}

/// Reads backwards from the end: where the complete lines end, and the last of them.
fn read_tail(file: &mut File, len: u64) -> io::Result<Tail> {
    const BLOCK: u64 = 8192;
    let mut block = vec![0u8; BLOCK as usize];

    let mut end = len;
    let last_newline = loop {
        if end == 0 {
            break None;
        }
        let start = end.saturating_sub(BLOCK);
        let buf = &mut block[..(end - start) as usize];
        read_at(file, start, buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            break Some(start + i as u64);
        }
        end = start;
    };
    let Some(last_newline) = last_newline else {
        return Ok(Tail {
            complete_len: 0,
            last_line: None,
        });
    };

    // Collect the line that ends at `last_newline`, block by block, backwards.
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut size = 0usize;
    let mut end = last_newline;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let buf = &mut block[..(end - start) as usize];
        read_at(file, start, buf)?;
        let (piece, done) = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => (&buf[i + 1..], true),
            None => (&buf[..], false),
        };
        size += piece.len();
        if size > MAX_LINE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the last line of the audit log is too long to be a record",
            ));
        }
        pieces.push(piece.to_vec());
        if done {
            break;
        }
        end = start;
    }
    let line = pieces.into_iter().rev().flatten().collect();
    Ok(Tail {
        complete_len: last_newline + 1,
        last_line: Some(line),
    })
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}
