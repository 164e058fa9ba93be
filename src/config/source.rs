//! [`ConfigSource`]: where the running config came from, so a reload can read it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Config, Result, TlsSource, load};

/// The config file and the environment overrides taken at start-up. The process
/// environment cannot change under a running process, so a reload re-reads the file with
/// the same overrides: a key set only in the environment changes with a restart.
pub struct ConfigSource {
    file: PathBuf,
    env: HashMap<String, String>,
}

impl ConfigSource {
    pub fn new(file: PathBuf, env: HashMap<String, String>) -> ConfigSource {
        ConfigSource { file, env }
    }

    /// Reads and validates the file again, with the start-up environment overrides.
    pub fn load(&self) -> Result<Config> {
        load(Some(&self.file), &self.env)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The files whose contents a change of triggers a reload: the config file and the
    /// TLS material it names.
    pub fn watched_files(&self, config: &Config) -> Vec<PathBuf> {
        let mut files = vec![self.file.clone()];
        if let TlsSource::Files { cert, key } = &config.server.tls {
            files.extend([cert.clone(), key.clone()]);
        }
        files.extend(config.server.client_ca.clone());
        files
    }
}
