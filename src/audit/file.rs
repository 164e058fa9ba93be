//! The log file on disk: opening it durably, finding where the chain stands after a start
//! or a crash, and cutting off what was written but never acknowledged.
//!
//! Everything here runs on the writer thread, between groups; see the durability guarantees
//! in the [`audit`](super) module documentation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::record::ChainHead;
use super::resume::{ChainKeys, head_after};
use super::rotate::{parent_dir, rotated_files};
use super::segment::{self, Lines, Tail};

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

/// Opens (creating it if needed, mode 0600) the file at `path` for writing at given
/// offsets (records overwrite the padding, see `segment.rs`) and reading back, and syncs
/// its directory so that a new file or a rename before it is durable.
pub(super) fn open(path: &Path) -> io::Result<File> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Reconciles a reopened file of `len` bytes with the `committed` bytes of records
/// acknowledged so far, and returns the new committed length: what a failed write may have
/// left in `[committed, dirty_until)` is padded over again; a file shorter than `committed`
/// was changed outside payshim and is taken as it is.
pub(super) fn cut_back(
    path: &Path,
    file: &File,
    len: u64,
    committed: u64,
    dirty_until: u64,
) -> io::Result<u64> {
    if len < committed {
        warn!(
            path = %path.display(),
            "audit log is shorter than what was written: it was replaced or cut \
             outside payshim; the chain continues from the last record written"
        );
        return Ok(scan(file)?.start);
    }
    let dirty_until = dirty_until.min(len);
    if dirty_until > committed {
        warn!(
            path = %path.display(),
            bytes = dirty_until - committed,
            "audit log: removing the unacknowledged end of a failed write"
        );
        segment::pad(file, committed, dirty_until)?;
        file.sync_data()?;
    }
    Ok(committed)
}

/// Reads the chain head from the last complete record of the file at `path`, or of the
/// newest rotated file, and pads over the unwritten tail if a crash left record bytes in
/// it. Returns the head and where the records of the file end.
pub(super) fn recover(
    path: &Path,
    keys: &ChainKeys,
    file: &File,
) -> Result<(ChainHead, u64), WriteFailure> {
    let (last_line, tail) = last_line(file)?;
    if tail.torn() {
        warn!(
            path = %path.display(),
            bytes = tail.dirty_end - tail.start,
            "audit log ends with an incomplete record (crash during a write?): removing it"
        );
        segment::pad(file, tail.start, tail.dirty_end)?;
        file.sync_data()?;
    }
    let last = match last_line {
        Some(line) => Some((path.to_path_buf(), line)),
        None => last_rotated_line(path)?,
    };
    let head = match last {
        None => ChainHead::genesis(Some(keys.current.id)),
        Some((path, line)) => {
            head_after(keys, &line).map_err(|what| WriteFailure::BadTail { path, what })?
        }
    };
    Ok((head, tail.start))
}

/// The current file has no record (new, or a crash right after a rotation):
/// the chain continues from the newest rotated file.
fn last_rotated_line(path: &Path) -> io::Result<Option<(PathBuf, Vec<u8>)>> {
    for (_, path) in rotated_files(path)?.into_iter().rev() {
        if let (Some(line), _) = last_line(&File::open(&path)?)? {
            return Ok(Some((path, line)));
        }
    }
    Ok(None)
}

/// The last complete record of `file` (read from its start) and what follows it.
fn last_line(mut file: &File) -> io::Result<(Option<Vec<u8>>, Tail)> {
    file.seek(SeekFrom::Start(0))?;
    let mut lines = Lines::new(file);
    let mut last = Vec::new();
    let mut any = false;
    while let Some(line) = lines.next_line()? {
        last.clear();
        last.extend_from_slice(line);
        any = true;
    }
    let tail = lines.tail().unwrap_or_default();
    Ok((any.then_some(last), tail))
}

fn scan(file: &File) -> io::Result<Tail> {
    Ok(last_line(file)?.1)
}

/// Makes directory entries (a new file, a rename) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
