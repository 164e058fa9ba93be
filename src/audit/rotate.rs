//! Rotation: the full file is renamed to `<path>.<N>`, N = 1 + the highest existing N, so
//! `.1` is the oldest; and the listing of those files, oldest first, for recovery and
//! verification.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Renames the file at `path` to the next `<path>.<N>` and returns that name. The caller
/// opens the new file, whose directory sync makes the rename durable too.
pub(super) fn rename_aside(path: &Path) -> io::Result<PathBuf> {
    let next = rotated_files(path)?.last().map_or(0, |(n, _)| *n) + 1;
    let target = rotated_path(path, next);
    fs::rename(path, &target)?;
    Ok(target)
}

/// `<path>.<n>`: the name the n-th rotation gives the file.
fn rotated_path(path: &Path, n: u64) -> PathBuf {
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

/// The directory holding `path`: `.` for a bare file name, whose `parent()` is empty. Lives
/// here, below `file.rs`, because the listing of rotated files needs it as much as opening
/// the file does.
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
