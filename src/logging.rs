//! The log pipeline: tracing subscriber, JSON or pretty, every line through the scrubber.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};

/// Builds the subscriber for `log` on top of `writer`. Used for the real pipeline and for
/// the start-up canary, so the canary tests exactly what production runs.
pub fn subscriber<W>(log: &LogConfig, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match log.format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.finish()),
    }
}

/// Installs the pipeline writing to stdout.
pub fn init(log: &LogConfig) {
    let sub = subscriber(log, std::io::stdout);
    let _ = tracing::subscriber::set_global_default(sub);
}
