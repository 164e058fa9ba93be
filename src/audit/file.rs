//! The log file on disk: opening it durably, finding where the chain stands after a start
//! or a crash, and cutting off what was written but never acknowledged.
//!
//! Everything here runs on the writer thread, between groups; see the durability guarantees
//! in the [`audit`](super) module documentation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::record::ChainHead;
use super::resume::{ChainKeys, head_after};
use super::rotate::{parent_dir, rotated_files};

/// Longest last line recovery reads back before giving up on the file.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Why the file cannot take records.
#[derive(thiserror::Error, Debug)]
pub(super) enum WriteFailure {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "the last record of {} does not verify ({what}): wrong audit key, or the file was \
         changed; run `payshim audit verify`, or move the files aside to start a new chain",
        .path.display()
    )]
    BadTail { path: PathBuf, what: String },
}

/// Opens (creating it if needed, mode 0600) the file at `path` for appending and reading
/// back, and syncs its directory so that a new file or a rename before it is durable.
pub(super) fn open(path: &Path) -> io::Result<File> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Reconciles a reopened file of `len` bytes with the `committed` bytes acknowledged so far,
/// and returns the new committed length: the unacknowledged end of a failed write is cut
/// off; a file shorter than that was changed outside payshim and is taken as it is.
pub(super) fn cut_back(path: &Path, file: &File, len: u64, committed: u64) -> io::Result<u64> {
    if len > committed {
        warn!(
            path = %path.display(),
            bytes = len - committed,
            "audit log: removing the unacknowledged end of a failed write"
        );
        file.set_len(committed)?;
        Ok(committed)
    } else if len < committed {
        warn!(
            path = %path.display(),
            "audit log is shorter than what was written: it was replaced or cut \
             outside payshim; the chain continues from the last record written"
        );
        Ok(len)
    } else {
        Ok(committed)
    }
}

/// Reads the chain head from the last complete line of the file at `path` (`len` bytes), or
/// of the newest rotated file, cutting off an incomplete last line. Returns the head and the
/// file's length after the cut.
pub(super) fn recover(
    path: &Path,
    keys: &ChainKeys,
    file: &mut File,
    len: u64,
) -> Result<(ChainHead, u64), WriteFailure> {
    let tail = read_tail(file, len)?;
    if tail.complete_len < len {
        warn!(
            path = %path.display(),
            bytes = len - tail.complete_len,
            "audit log ends with an incomplete line (crash during a write?): removing it"
        );
        file.set_len(tail.complete_len)?;
    }
    let last = match tail.last_line {
        Some(line) => Some((path.to_path_buf(), line)),
        None => last_rotated_line(path)?,
    };
    let head = match last {
        None => ChainHead::genesis(Some(keys.current.id)),
        Some((path, line)) => {
            head_after(keys, &line).map_err(|what| WriteFailure::BadTail { path, what })?
        }
    };
    Ok((head, tail.complete_len))
}

/// The current file has no record (new, or a crash right after a rotation):
/// the chain continues from the newest rotated file.
fn last_rotated_line(path: &Path) -> io::Result<Option<(PathBuf, Vec<u8>)>> {
    for (_, path) in rotated_files(path)?.into_iter().rev() {
        let mut file = File::open(&path)?;
        let len = file.metadata()?.len();
        if let Some(line) = read_tail(&mut file, len)?.last_line {
            return Ok(Some((path, line)));
        }
    }
    Ok(None)
}

/// Makes directory entries (a new file, a rename) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
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
