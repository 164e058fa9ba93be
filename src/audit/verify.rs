//! Offline verification of the chain, across rotated files (`payshim audit verify`).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::key_id::{KeyId, Keyring, Signer};
use super::record::{ChainHead, LineError, ParsedLine, parse_line};
use super::segment::Lines;

/// What a successful verification saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Complete lines verified, all files together.
    pub records: u64,
    /// Files read.
    pub files: usize,
    /// The last file's unwritten tail holds bytes of an incomplete record (a crash
    /// during a write), not only padding. That record was never acknowledged; it is
    /// not counted, and the next start of the writer pads over it.
    pub torn_tail: bool,
    /// Of `records`, the system events (start, stop, reload, key rotation).
    pub system_events: u64,
    /// Of `system_events`, the `audit.key_rotated` records: the chain changed keys.
    pub key_rotations: u64,
}

/// The first line that does not verify. `line` is 1-based, within `file`.
#[derive(thiserror::Error, Debug)]
pub enum VerifyError {
    #[error(
        "{}: line {line}: bad mac: the line was changed, or written with another key",
        .file.display()
    )]
    BadMac { file: PathBuf, line: u64 },
    #[error("{}: line {line}: broken chain: {what}", .file.display())]
    BrokenChain {
        file: PathBuf,
        line: u64,
        what: &'static str,
    },
    #[error(
        "{}: line {line}: seq gap: expected seq {expected}, found {found}",
        .file.display()
    )]
    SeqGap {
        file: PathBuf,
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "{}: line {line}: signed by key id {key_id}, which was not given: give that key \
         too (--key-file, repeatable)",
        .file.display()
    )]
    KeyNotGiven {
        file: PathBuf,
        line: u64,
        key_id: KeyId,
    },
    #[error(
        "{}: line {line}: signed by key id {key_id}, but the chain is on key id {expected} \
         here: a chain changes keys only after an audit.key_rotated record",
        .file.display()
    )]
    WrongKey {
        file: PathBuf,
        line: u64,
        key_id: KeyId,
        expected: KeyId,
    },
    #[error("{}: line {line}: malformed line: {what}", .file.display())]
    Malformed {
        file: PathBuf,
        line: u64,
        what: &'static str,
    },
    #[error("{}: line {line}: cannot read: {source}", .file.display())]
    Io {
        file: PathBuf,
        /// The line being read; 0 when the file could not be opened.
        line: u64,
        #[source]
        source: io::Error,
    },
}

impl VerifyError {
    /// The file holding the first bad line.
    pub fn file(&self) -> &Path {
        match self {
            Self::BadMac { file, .. }
            | Self::KeyNotGiven { file, .. }
            | Self::WrongKey { file, .. }
            | Self::BrokenChain { file, .. }
            | Self::SeqGap { file, .. }
            | Self::Malformed { file, .. }
            | Self::Io { file, .. } => file,
        }
    }

    /// The 1-based number of the first bad line in [`Self::file`] (0: the file could not be opened).
    pub fn line(&self) -> u64 {
        match self {
            Self::BadMac { line, .. }
            | Self::KeyNotGiven { line, .. }
            | Self::WrongKey { line, .. }
            | Self::BrokenChain { line, .. }
            | Self::SeqGap { line, .. }
            | Self::Malformed { line, .. }
            | Self::Io { line, .. } => *line,
        }
    }
}

/// Verifies the chain through `paths`, oldest file first, the current file last
/// (see [`chain_files`](super::chain_files)).
///
/// The chain must start at the first record ever written (`seq` 1, `prev` 64
/// zeros), so every removed, inserted, reordered or changed line is found,
/// including the first ones. Lines removed from the very end of the last file
/// cannot be seen from the files alone: compare the last `seq` with an
/// external copy (e.g. the records shipped to a log store).
pub fn verify_files(paths: &[PathBuf], key: &[u8]) -> Result<VerifyReport, VerifyError> {
    verify_chain(paths, &[key])
}

/// [`verify_files`] for a chain whose key was rotated: `keys` holds every key it may be
/// signed with, in any order. Each record names its key by id; the chain starts on the
/// key its first record names and changes keys only at an `audit.key_rotated` record
/// (signed with the old key, naming the new one), so a retired key cannot sign records
/// after its successor took over.
pub fn verify_chain(paths: &[PathBuf], keys: &[&[u8]]) -> Result<VerifyReport, VerifyError> {
    let ring = Keyring::new(keys.iter().copied());
    let mut head = ChainHead::genesis(None);
    let mut report = VerifyReport {
        records: 0,
        files: 0,
        torn_tail: false,
        system_events: 0,
        key_rotations: 0,
    };
    for (index, path) in paths.iter().enumerate() {
        let is_last_file = index + 1 == paths.len();
        let file = File::open(path).map_err(|source| VerifyError::Io {
            file: path.clone(),
            line: 0,
            source,
        })?;
        let mut lines = Lines::new(file);
        let mut line = 0u64;
        loop {
            line += 1;
            let read = lines.next_line().map_err(|source| VerifyError::Io {
                file: path.clone(),
                line,
                source,
            })?;
            let Some(buf) = read else {
                if lines.tail().is_some_and(|tail| tail.torn()) {
                    if !is_last_file {
                        return Err(VerifyError::Malformed {
                            file: path.clone(),
                            line,
                            what: "incomplete last line in a file that is not the last one",
                        });
                    }
                    report.torn_tail = true;
                }
                break;
            };
            let at = |what| (path.clone(), line, what);
            let parsed = parse_line(buf).map_err(|e| line_error(at(e)))?;
            let signer = signer_of(&ring, &head, &parsed, path, line)?;
            let signed = match signer {
                Some(signer) => parsed.verify(&signer.hash),
                None => Err(LineError::BadMac),
            }
            .map_err(|e| line_error(at(e)))?;
            if parsed.is_system_event() {
                report.system_events += 1;
            }
            if signed.switches_to.is_some() {
                report.key_rotations += 1;
            }
            let signed_by = signer.map(|s| s.id);
            if signed.prev != head.prev {
                let what = if report.records == 0 {
                    "the first record does not start the chain (prev is not 64 zeros): \
                     give every file, oldest first"
                } else {
                    "prev is not the previous record's mac: a record before this one was \
                     removed, inserted or moved"
                };
                return Err(VerifyError::BrokenChain {
                    file: path.clone(),
                    line,
                    what,
                });
            }
            if signed.seq != head.next_seq {
                return Err(VerifyError::SeqGap {
                    file: path.clone(),
                    line,
                    expected: head.next_seq,
                    found: signed.seq,
                });
            }
            head = ChainHead::after(&signed, signed_by.as_ref()).ok_or(VerifyError::Malformed {
                file: path.clone(),
                line,
                what: "seq is at its maximum",
            })?;
            report.records += 1;
        }
        report.files += 1;
    }
    Ok(report)
}

fn line_error((file, line, error): (PathBuf, u64, LineError)) -> VerifyError {
    match error {
        LineError::BadMac => VerifyError::BadMac { file, line },
        LineError::Malformed(what) => VerifyError::Malformed { file, line, what },
    }
}

/// The key `parsed` must verify with: the one it names, which must be the chain's key at
/// this point once that is known. A line that names no key (written before records named
/// theirs) gets the chain's key, or at the start whichever given key verifies it
/// (`None`: none does).
fn signer_of<'r>(
    ring: &'r Keyring,
    head: &ChainHead,
    parsed: &ParsedLine<'_>,
    file: &Path,
    line: u64,
) -> Result<Option<&'r Signer>, VerifyError> {
    let named = parsed.key_id().or(head.key.as_ref());
    let Some(id) = named else {
        return Ok(ring.iter().find(|s| parsed.verify(&s.hash).is_ok()));
    };
    if let Some(expected) = &head.key
        && expected != id
    {
        return Err(VerifyError::WrongKey {
            file: file.to_path_buf(),
            line,
            key_id: *id,
            expected: *expected,
        });
    }
    ring.get(id)
        .map(Some)
        .ok_or_else(|| VerifyError::KeyNotGiven {
            file: file.to_path_buf(),
            line,
            key_id: *id,
        })
}
