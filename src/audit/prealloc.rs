//! Preallocation of the current file: NUL padding written and synced ahead of the records,
//! so that a record's `fdatasync` only has data to write. A write that makes the file
//! longer also changes its size, and then the sync must write the inode too (on ext4 a
//! metadata journal commit, or without a journal an extra inode block write); a write
//! into bytes that already exist does not. `fallocate` is not enough: it reserves
//! *unwritten* extents, and the first write into one changes the extent tree, which the
//! sync must then commit. So the padding is written as real bytes.
//!
//! The file grows by [`STEP`] at a time, never past the rotation size: a step is written
//! and synced by a short-lived helper thread while the writer still has up to a step of
//! padding before it, so it is off the commit path. The writer never writes past the
//! padding a finished step left (it waits for the step in flight first, or, if there is
//! none, grows the file itself by a small [`INLINE_STEP`]), so the helper's zeros never
//! land on a record. A new file gets its first [`INLINE_STEP`] from the writer (a disk too
//! full for it makes the log unavailable at once), the rest from the helper.

use std::fs::File;
use std::io;
use std::thread::JoinHandle;

use tracing::warn;

use super::segment;

/// How much padding one step of the helper thread adds.
pub(super) const STEP: u64 = 2 << 20;
/// How much padding the writer adds itself when it finds none ahead (a new file, or a
/// helper that fell behind): small, since the records wait for it.
pub(super) const INLINE_STEP: u64 = 64 << 10;

/// The preallocation state of the current file.
#[derive(Debug, Default)]
pub(super) struct Prealloc {
    /// The file's length as last synced: records and padding below it are durable bytes.
    ready_end: u64,
    /// A step being written by the helper thread: its result is the new `ready_end`.
    in_flight: Option<JoinHandle<io::Result<u64>>>,
}

impl Prealloc {
    /// For a file just opened, `len` bytes long and durable (synced when opened).
    pub(super) fn opened(len: u64) -> Self {
        Self {
            ready_end: len,
            in_flight: None,
        }
    }

    /// Makes sure `[0, end)` exists as synced bytes before a write ending at `end`, waiting
    /// for the step in flight or growing the file here. `limit` is the rotation size: the
    /// file is padded up to it at most (a record larger than that is written past it).
    pub(super) fn ensure(&mut self, file: &File, end: u64, limit: u64) -> io::Result<()> {
        if end <= self.ready_end {
            return Ok(());
        }
        self.wait();
        if end <= self.ready_end {
            return Ok(());
        }
        let target = end.max(self.ready_end + INLINE_STEP).min(limit.max(end));
        self.ready_end = grow(file, self.ready_end, target)?;
        Ok(())
    }

    /// Starts the next step in the background when less than a step of padding is left
    /// after `used` bytes, and the file is below `limit`.
    pub(super) fn ahead(&mut self, file: &File, used: u64, limit: u64) {
        if self.in_flight.is_some()
            || self.ready_end >= limit
            || self.ready_end.saturating_sub(used) >= STEP
        {
            return;
        }
        let file = match file.try_clone() {
            Ok(file) => file,
            Err(e) => {
                warn!(error = %e, "audit log: cannot preallocate ahead; the writer will");
                return;
            }
        };
        let (from, to) = (self.ready_end, (self.ready_end + STEP).min(limit));
        let spawned = std::thread::Builder::new()
            .name("audit-prealloc".into())
            .spawn(move || grow(&file, from, to));
        match spawned {
            Ok(handle) => self.in_flight = Some(handle),
            Err(e) => warn!(error = %e, "audit log: cannot preallocate ahead; the writer will"),
        }
    }

    /// Waits for the step in flight, if any; a failed step is logged and left to
    /// [`Self::ensure`] to try again (and fail the group) when the writer needs it.
    pub(super) fn wait(&mut self) {
        let Some(handle) = self.in_flight.take() else {
            return;
        };
        match handle.join() {
            Ok(Ok(end)) => self.ready_end = self.ready_end.max(end),
            Ok(Err(e)) => warn!(error = %e, "audit log: preallocation failed (disk full?)"),
            Err(_) => warn!("audit log: the preallocation thread panicked"),
        }
    }
}

impl Drop for Prealloc {
    /// The helper holds its own handle to the file: let it finish before the file is
    /// renamed or reopened.
    fn drop(&mut self) {
        self.wait();
    }
}

/// Pads `[from, to)` and syncs the file with its new length; returns `to`.
fn grow(file: &File, from: u64, to: u64) -> io::Result<u64> {
    segment::pad(file, from, to)?;
    file.sync_all()?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn temp_file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("audit.jsonl"))
            .unwrap();
        (dir, file)
    }

    #[test]
    fn the_writer_pads_a_small_step_then_the_helper_a_large_one() {
        let (_dir, file) = temp_file();
        let limit = 3 * STEP;
        let mut prealloc = Prealloc::opened(0);
        prealloc.ensure(&file, 10, limit).unwrap();
        assert_eq!(file.metadata().unwrap().len(), INLINE_STEP);
        file.write_all_at(b"record\n", 0).unwrap();

        prealloc.ahead(&file, 7, limit);
        prealloc.wait();
        assert_eq!(file.metadata().unwrap().len(), INLINE_STEP + STEP);
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"record\n\0", "the padding never lands on a record");

        // More than a step of padding left: nothing to do.
        prealloc.ahead(&file, 7, limit);
        assert!(prealloc.in_flight.is_none());
        // Never past the limit.
        prealloc.ahead(&file, INLINE_STEP + 1, limit);
        prealloc.wait();
        prealloc.ahead(&file, 2 * STEP + 1, limit);
        prealloc.wait();
        assert_eq!(file.metadata().unwrap().len(), limit);
    }

    #[test]
    fn a_write_past_the_padding_waits_for_the_step_in_flight() {
        let (_dir, file) = temp_file();
        let mut prealloc = Prealloc::opened(0);
        prealloc.ahead(&file, 0, 4 * STEP);
        // The writer needs bytes the helper is padding: it must wait, not pad them itself.
        prealloc.ensure(&file, STEP, 4 * STEP).unwrap();
        assert!(prealloc.in_flight.is_none());
        assert_eq!(prealloc.ready_end, STEP);
        // A record larger than the limit is written past it.
        prealloc.ensure(&file, 5 * STEP, 4 * STEP).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 5 * STEP);
    }
}
