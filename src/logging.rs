//! The log pipeline: tracing subscriber, JSON or pretty, every line through the scrubber.

mod batch;
mod json;
#[cfg(test)]
mod tests;

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbingMakeWriter::new(writer))
        .with_ansi(false);
    match log.format {
        // Our own formatter: tracing-subscriber's `.json()` costs more than the rest of the
        // per-request log line (see `json`).
        LogFormat::Json => Box::new(
            builder
                .event_format(JsonLine {
                    sandbox: log.sandbox,
                })
                .finish(),
        ),
        LogFormat::Pretty if log.sandbox => Box::new(
            builder
                .event_format(SandboxMark(tracing_subscriber::fmt::format()))
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.finish()),
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
        let _ = tracing::subscriber::set_global_default(subscriber(log, std::io::stdout));
        return Ok(None);
    }
    let (batched, guard) = batch::Batched::new(std::io::stdout(), log.flush_interval);
    let _ = tracing::subscriber::set_global_default(subscriber(log, batched));
    Ok(Some(guard))
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
