//! Live reload: SIGHUP, or a change of a watched file's contents, re-reads the config
//! file and applies what can change in a running process (README.md, "Operations").
//!
//! A reload is all or nothing. The new config is read and validated, compared with the
//! running one (a changed key that needs a restart refuses it, naming the key), and its
//! TLS set-up is built, before anything is applied; any failure leaves the running
//! config serving, logs an ERROR naming the key and the fix, counts
//! `payshim_reloads_total{result="refused"}` and writes `config.reload_refused` into the
//! audit chain. Then, in order: the audit chain's key (the last step that can fail: the
//! audit log switches with a record signed by the old key), the log level, the TLS set-up
//! for new handshakes (open connections keep theirs), and the pipeline's live state
//! (storefronts, routes, quotas, upstream credentials) for requests that start from now
//! on: a request in flight finishes with the snapshot it took.

mod files;
mod record;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::audit::{AuditError, ReloadTrigger};
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
    #[error(
        "config key `audit.key`: the audit log could not switch to the new key ({0}); fix the audit log's disk and reload again"
    )]
    AuditKey(AuditError),
}

/// A reload may change `audit.key`: the audit log switches its chain to the new key with
/// an `audit.key_rotated` record signed by the old one.
const AUDIT_KEY_LIVE: bool = true;

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
                self.reload(trigger).await;
            }
        }
    }

    /// One reload: applied whole, or refused whole (logged, counted, audited).
    pub(crate) async fn reload(&mut self, trigger: ReloadTrigger) {
        let Some(source) = &self.source else {
            tracing::info!(
                trigger = record::name(trigger),
                "reload requested, but payshim runs on the embedded default config \
                 (no config file): nothing to reload"
            );
            return;
        };
        let loaded = source.load().map_err(ReloadError::from);
        let pipeline = self.pipeline.clone();
        let (metrics, audit) = (metrics(&pipeline), pipeline.audit());
        let new = match loaded {
            Ok(new) => new,
            Err(e) => return record::refused(metrics, audit, e.to_string(), trigger).await,
        };
        // Hashed before the TLS files are read: a change after this is seen next time.
        let watched = FileHashes::new(source.watched_files(&new));
        match self.apply(&new).await {
            Ok(sections) => {
                record::reloaded(metrics, audit, &new, sections, trigger).await;
                record::keys_rotated(audit, &self.current, &new).await;
                self.files = watched;
                self.current = new;
            }
            Err(e) => record::refused(metrics, audit, e.to_string(), trigger).await,
        }
    }

    /// Checks everything first, then applies; returns the changed sections.
    async fn apply(&mut self, new: &Config) -> Result<Vec<&'static str>, ReloadError> {
        let diff = ConfigDiff::between(&self.current, new);
        let not_live = diff.not_live(AUDIT_KEY_LIVE);
        if !not_live.is_empty() {
            let keys: Vec<String> = not_live.iter().map(|k| format!("`{k}`")).collect();
            return Err(ReloadError::NotLive {
                keys: keys.join(", "),
            });
        }
        let tls = rebuild_tls(new, &diff)
            .then(|| tls::server_config(&new.server.tls, new.server.client_ca.as_deref()))
            .transpose()?;
        if diff.touches("audit.key") {
            let audit = self.pipeline.audit();
            let rotated = audit.rotate_key(new.audit.key.clone()).await;
            rotated.map_err(ReloadError::AuditKey)?;
        }
        if diff.touches("log.level")
            && let Err(e) = crate::logging::set_level(&new.log.level)
        {
            // Validated with the config: not expected.
            tracing::warn!(error = %e, "log.level not applied");
        }
        let mut sections = diff.sections();
        if let Some(tls) = tls
            && self.swap_tls(tls)
            && !sections.contains(&"server")
        {
            sections.insert(0, "server");
        }
        let upstream_auth = diff.touches("upstream.auth");
        self.pipeline.reconfigure(new, upstream_auth);
        record::serving(metrics(&self.pipeline), new, None);
        Ok(sections)
    }

    /// New handshakes use `tls` from now on; true when it serves another certificate.
    fn swap_tls(&mut self, tls: ServerTls) -> bool {
        let changed = tls.leaf_sha256 != self.leaf;
        metrics(&self.pipeline)
            .certificate_not_after
            .set(tls.not_after);
        self.tls.store(tls.config);
        self.leaf = tls.leaf_sha256;
        changed
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
