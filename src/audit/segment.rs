//! The layout of an audit file on disk: complete record lines, then the unwritten tail.
//!
//! The current file is preallocated with NUL bytes ahead of the records (see `prealloc.rs`),
//! so that a record overwrites bytes that already exist and its `fdatasync` has no file
//! size to commit. A file therefore reads as:
//!
//! ```text
//! {"seq":1,...}\n{"seq":2,...}\n ... {"seq":n,...}\n  NUL NUL NUL ... NUL
//! ```
//!
//! The records end at the first line that holds a NUL byte or has no `\n` (a record is
//! JSON: it never holds a NUL). Everything from there to the end of the file is the
//! *unwritten tail*: NUL padding, and after a crash possibly the bytes of a group that was
//! being written and never acknowledged (a torn record, or sectors of the group that reached
//! the disk out of order). Verification, `audit pending` and recovery all read files through
//! [`Lines`], so they agree on where the records end.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The padding byte of the unwritten part of a file.
pub(super) const PAD: u8 = 0;

/// What follows the last complete record of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Tail {
    /// Offset of the first byte after the last complete record (its `\n`).
    pub start: u64,
    /// Offset one past the last byte of the tail that is not padding: `start` when the
    /// tail is all padding (or empty).
    pub dirty_end: u64,
    /// File length.
    pub end: u64,
}

impl Tail {
    /// The tail holds bytes of a record that was never completed (a crash mid-write).
    pub(super) fn torn(&self) -> bool {
        self.dirty_end > self.start
    }
}

/// Reads the complete record lines of a file, then reports its [`Tail`].
pub(super) struct Lines<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    offset: u64,
    tail: Option<Tail>,
}

impl<R: Read> Lines<R> {
    pub(super) fn new(inner: R) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, inner),
            buf: Vec::with_capacity(1024),
            offset: 0,
            tail: None,
        }
    }

    /// The next complete record line, without its `\n`; `None` once the records end (then
    /// [`Self::tail`] tells what follows them).
    pub(super) fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        if self.tail.is_some() {
            return Ok(None);
        }
        self.buf.clear();
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            match available.iter().position(|&b| b == b'\n' || b == PAD) {
                Some(i) if available[i] == b'\n' => {
                    self.buf.extend_from_slice(&available[..i]);
                    self.reader.consume(i + 1);
                    self.offset += self.buf.len() as u64 + 1;
                    return Ok(Some(&self.buf));
                }
                // Padding before the end of the line: the records end here.
                Some(_) => break,
                None => {
                    let n = available.len();
                    self.buf.extend_from_slice(available);
                    self.reader.consume(n);
                }
            }
        }
        self.read_tail()?;
        Ok(None)
    }

    /// Reads the rest of the file as the tail, which starts with the incomplete line in `buf`.
    fn read_tail(&mut self) -> io::Result<()> {
        let start = self.offset;
        let mut dirty_end = match self.buf.iter().rposition(|&b| b != PAD) {
            Some(i) => start + i as u64 + 1,
            None => start,
        };
        let mut end = start + self.buf.len() as u64;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            if let Some(i) = available.iter().rposition(|&b| b != PAD) {
                dirty_end = end + i as u64 + 1;
            }
            let n = available.len();
            end += n as u64;
            self.reader.consume(n);
        }
        self.tail = Some(Tail {
            start,
            dirty_end,
            end,
        });
        Ok(())
    }

    /// What follows the records; `None` until [`Self::next_line`] returned `None`.
    pub(super) fn tail(&self) -> Option<Tail> {
        self.tail
    }
}

/// The complete record lines of the audit file at `path`, each with its `\n`, without the
/// unwritten tail: the text an auditor's `jq` or `grep` sees once the padding is removed
/// (`tr -d '\0' < FILE`), and what tests read records from.
pub fn read_records(path: &Path) -> io::Result<String> {
    let mut lines = Lines::new(File::open(path)?);
    let mut text = String::new();
    while let Some(line) = lines.next_line()? {
        let line =
            std::str::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        text.push_str(line);
        text.push('\n');
    }
    Ok(text)
}

/// Overwrites `[from, to)` of `file` with padding. Does not sync.
pub(super) fn pad(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![PAD; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let n = CHUNK.min(to - at) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> (Vec<Vec<u8>>, Tail) {
        let mut lines = Lines::new(bytes);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            out.push(line.to_vec());
        }
        (out, lines.tail().unwrap())
    }

    #[test]
    fn records_end_at_the_first_padding_or_incomplete_line() {
        let (lines, tail) = read(b"a\nb\n\0\0\0");
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            tail,
            Tail {
                start: 4,
                dirty_end: 4,
                end: 7
            }
        );
        assert!(!tail.torn());

        // A torn record, then padding, then stray bytes written out of order.
        let (lines, tail) = read(b"a\n{\"se\0\0x\n\0\0");
        assert_eq!(lines, [b"a".to_vec()]);
        assert_eq!((tail.start, tail.dirty_end, tail.end), (2, 10, 12));
        assert!(tail.torn());

        // No padding at all (a rotated file): an incomplete last line is the tail.
        let (lines, tail) = read(b"a\nbc");
        assert_eq!(lines, [b"a".to_vec()]);
        assert_eq!((tail.start, tail.dirty_end, tail.end), (2, 4, 4));

        let (lines, tail) = read(b"");
        assert!(lines.is_empty());
        assert_eq!(tail, Tail::default());
    }

    #[test]
    fn a_line_holding_padding_ends_the_records() {
        let (lines, tail) = read(b"a\nb\0c\nd\n");
        assert_eq!(lines, [b"a".to_vec()]);
        assert_eq!((tail.start, tail.dirty_end, tail.end), (2, 8, 8));
    }
}
