//! The log pipeline: tracing subscriber, JSON or pretty, every line through the scrubber.

mod batch;
mod json;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::OnceLock;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};
use crate::redact::{CanaryError, ScrubbingMakeWriter, canary_check};
use json::JsonLine;

pub use batch::FlushGuard;

/// Builds the subscriber for `log` on top of `writer`, every event scrubbed before it is
/// written. Used for the real pipeline and for the start-up canary, so the canary tests
/// exactly what production runs.
pub fn subscriber<W>(log: &LogConfig, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber_with_level(log, writer).0
}

/// The level filter of the installed pipeline, changed by a reload of `log.level`.
type LevelHandle = reload::Handle<EnvFilter, Registry>;

static LEVEL: OnceLock<LevelHandle> = OnceLock::new();

/// [`subscriber`], and the handle that changes its level filter.
fn subscriber_with_level<W>(
    log: &LogConfig,
    writer: W,
) -> (Box<dyn tracing::Subscriber + Send + Sync>, LevelHandle)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(ScrubbingMakeWriter::new(writer))
        .with_ansi(false);
    type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    let layer: Box<dyn Layer<Filtered> + Send + Sync> = match log.format {
        // Our own formatter: tracing-subscriber's `.json()` costs more than the rest of the
        // per-request log line (see `json`).
        LogFormat::Json => Box::new(layer.event_format(JsonLine {
            sandbox: log.sandbox,
        })),
        LogFormat::Pretty if log.sandbox => {
            Box::new(layer.event_format(SandboxMark(tracing_subscriber::fmt::format())))
        }
        LogFormat::Pretty => Box::new(layer),
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(layer);
    (Box::new(subscriber), handle)
}

/// Applies a reloaded `log.level` to the installed pipeline. Nothing to do when none was
/// installed by [`init`] (tests that run payshim inside their own process).
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    match LEVEL.get() {
        Some(handle) => handle.reload(filter).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Proves the pipeline masks card data (the canary), then installs it on stdout, in
/// batches unless `log.flush_interval` is zero. payshim refuses to start if the canary
/// comes out unmasked. Hold the guard until exit: dropping it writes the last batch.
pub fn init(log: &LogConfig) -> Result<Option<FlushGuard>, CanaryError> {
    // The same pipeline, with the canary's target let through even at `level = "off"`.
    let canary = LogConfig {
        format: log.format,
        level: format!("{},{}=error", log.level, crate::redact::CANARY_TARGET),
        flush_interval: log.flush_interval,
        sandbox: log.sandbox,
    };
    canary_check(|capture| subscriber(&canary, capture))?;
    if log.flush_interval.is_zero() {
        install(subscriber_with_level(log, std::io::stdout));
        return Ok(None);
    }
    let (batched, guard) = batch::Batched::new(std::io::stdout(), log.flush_interval);
    install(subscriber_with_level(log, batched));
    Ok(Some(guard))
}

/// Installs the pipeline for the whole process and keeps its level handle for reloads.
fn install((subscriber, level): (Box<dyn tracing::Subscriber + Send + Sync>, LevelHandle)) {
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        let _ = LEVEL.set(level);
    }
}

/// Starts every pretty line with `sandbox=true` (the JSON formatter writes the field
/// itself), so no line of a sandbox run can be mistaken for one about real payments.
struct SandboxMark<F>(F);

impl<S, N, F> FormatEvent<S, N> for SandboxMark<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("sandbox=true ")?;
        self.0.format_event(ctx, writer, event)
    }
}
