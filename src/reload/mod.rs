//! Live reload: SIGHUP, or a change of a watched file's contents, re-reads the config
//! file and applies what can change in a running process (README.md, "Operations").
//!
//! A reload is all or nothing. The new config is read and validated, compared with the
//! running one (a changed key that needs a restart refuses it, naming the key), and its
//! TLS set-up is built, before anything is applied; any failure leaves the running
//! config serving, logs an ERROR naming the key and the fix, and counts
//! `payshim_reloads_total{result="refused"}`. Then, in order: the log level, the TLS
//! set-up for new handshakes (open connections keep theirs), and the pipeline's live
//! state (storefronts, routes, quotas, upstream credentials) for requests that start
//! from now on: a request in flight finishes with the snapshot it took.

mod files;
mod record;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigDiff, ConfigError, ConfigSource, TlsSource};
use crate::metrics::ReloadMetrics;
use crate::pipeline::Pipeline;
use crate::swap::Swap;
use crate::tls::{self, ServerTls, TlsError};
use files::FileHashes;

/// What a running payshim can reload from: the config file (none when it runs on the
/// embedded default, and then a SIGHUP only logs that there is nothing to reload) and
/// the reload requests (SIGHUP, sent by `main`).
pub struct Reloads {
    pub source: Option<ConfigSource>,
    pub signals: mpsc::Receiver<()>,
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    Signal,
    FileChange,
}

impl ReloadTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::FileChange => "file_change",
        }
    }
}

/// Why a reload was refused; each names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "config key(s) {keys} changed, but only take effect on a restart: put the running \
         value back and reload, or restart payshim"
    )]
    NotLive { keys: String },
}

/// Whether a reload may change `audit.key` (only when the audit log can rotate its key
/// with a record in the chain).
const AUDIT_KEY_LIVE: bool = false;

/// Owns the running config and applies reloads to the live parts.
pub(crate) struct Reloader {
    source: Option<ConfigSource>,
    current: Config,
    files: FileHashes,
    pipeline: Arc<Pipeline>,
    tls: Arc<Swap<rustls::ServerConfig>>,
    /// The served leaf certificate's hash, to tell whether a reload changed it.
    leaf: [u8; 32],
}

impl Reloader {
    pub(crate) fn new(
        source: Option<ConfigSource>,
        current: Config,
        pipeline: Arc<Pipeline>,
        tls: Arc<Swap<rustls::ServerConfig>>,
        served: &ServerTls,
    ) -> Reloader {
        let files = FileHashes::new(
            source
                .as_ref()
                .map(|s| s.watched_files(&current))
                .unwrap_or_default(),
        );
        record::serving(metrics(&pipeline), &current, Some(served.not_after));
        Reloader {
            source,
            current,
            files,
            pipeline,
            tls,
            leaf: served.leaf_sha256,
        }
    }

    /// Reloads on each signal and, every `server.reload_check_interval`, when a watched
    /// file's contents changed; ends when `stop` flips.
    pub(crate) async fn run(
        mut self,
        mut signals: mpsc::Receiver<()>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut signals_open = true;
        loop {
            let interval = self.current.server.reload_check_interval;
            let tick = async {
                match interval {
                    Some(i) if self.source.is_some() => tokio::time::sleep(i).await,
                    _ => std::future::pending().await,
                }
            };
            let trigger = tokio::select! {
                s = signals.recv(), if signals_open => match s {
                    Some(()) => ReloadTrigger::Signal,
                    None => {
                        signals_open = false;
                        continue;
                    }
                },
                _ = tick => ReloadTrigger::FileChange,
                _ = stop.changed() => return,
            };
            let changed = self.files.changed();
            if trigger == ReloadTrigger::Signal || changed {
                self.reload(trigger);
            }
        }
    }

    /// One reload: applied whole, or refused whole (logged, counted).
    pub(crate) fn reload(&mut self, trigger: ReloadTrigger) {
        let Some(source) = &self.source else {
            tracing::info!(
                trigger = trigger.as_str(),
                "reload requested, but payshim runs on the embedded default config \
                 (no config file): nothing to reload"
            );
            return;
        };
        let new = match source.load().map_err(ReloadError::from) {
            Ok(new) => new,
            Err(e) => return record::refused(metrics(&self.pipeline), &e.to_string(), trigger),
        };
        match self.apply(&new) {
            Ok(sections) => {
                record::reloaded(metrics(&self.pipeline), &new, &sections, trigger);
                let watched = self.source.as_ref().map(|s| s.watched_files(&new));
                self.files = FileHashes::new(watched.unwrap_or_default());
                self.current = new;
            }
            Err(e) => record::refused(metrics(&self.pipeline), &e.to_string(), trigger),
        }
    }

    /// Checks everything first, then applies; returns the changed sections.
    fn apply(&mut self, new: &Config) -> Result<Vec<&'static str>, ReloadError> {
        let diff = ConfigDiff::between(&self.current, new);
        let not_live = diff.not_live(AUDIT_KEY_LIVE);
        if !not_live.is_empty() {
            let keys = not_live
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>();
            return Err(ReloadError::NotLive {
                keys: keys.join(", "),
            });
        }
        let tls = rebuild_tls(new, &diff)
            .then(|| tls::server_config(&new.server.tls, new.server.client_ca.as_deref()))
            .transpose()?;
        if diff.touches("log.level") {
            crate::logging::set_level(&new.log.level)
                .map_err(|e| ConfigError::new("log.level", e))?;
        }
        let mut sections = diff.sections();
        if let Some(tls) = tls {
            if tls.leaf_sha256 != self.leaf && !sections.contains(&"server") {
                sections.insert(0, "server");
            }
            self.tls.store(tls.config);
            self.leaf = tls.leaf_sha256;
            metrics(&self.pipeline)
                .certificate_not_after
                .set(tls.not_after);
        }
        self.pipeline
            .reconfigure(new, diff.touches("upstream.auth"));
        record::serving(metrics(&self.pipeline), new, None);
        Ok(sections)
    }
}

/// Certificate files are read again on every reload (their contents may have changed
/// under the same names); the dev certificate only when the TLS keys changed, since a
/// new one would be generated.
fn rebuild_tls(new: &Config, diff: &ConfigDiff) -> bool {
    matches!(new.server.tls, TlsSource::Files { .. })
        || new.server.client_ca.is_some()
        || diff.touches("server.cert")
        || diff.touches("server.key")
        || diff.touches("server.client_ca")
}

fn metrics(pipeline: &Pipeline) -> &ReloadMetrics {
    &pipeline.metrics().reload
}
