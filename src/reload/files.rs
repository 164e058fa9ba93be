//! The watched files, compared by their contents.
//!
//! Contents, not modification times: Kubernetes updates a mounted Secret by pointing a
//! `..data` symlink at a new directory, so the path payshim opened keeps its old mtime
//! (and a `cp -p` or an rsync keeps the old one too). Hashing a config file and a few PEM
//! files every `server.reload_check_interval` costs microseconds.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// The files and the hash of what each held when last looked at (`None`: unreadable).
pub(super) struct FileHashes {
    files: Vec<(PathBuf, Option<[u8; 32]>)>,
}

impl FileHashes {
    pub(super) fn new(paths: Vec<PathBuf>) -> FileHashes {
        let files = paths
            .into_iter()
            .map(|p| {
                let hash = hash(&p);
                (p, hash)
            })
            .collect();
        FileHashes { files }
    }

    /// Whether any file's contents changed since the last look; remembers the new ones,
    /// so one change triggers one reload.
    pub(super) fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.files {
            let now = hash(path);
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

/// Follows symlinks, as opening the file for use does.
fn hash(path: &PathBuf) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_contents_is_seen_once_even_with_the_same_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "one").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut files = FileHashes::new(vec![path.clone()]);
        assert!(!files.changed());
        std::fs::write(&path, "two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(files.changed());
        assert!(!files.changed());
        std::fs::remove_file(&path).unwrap();
        assert!(files.changed());
    }
}
