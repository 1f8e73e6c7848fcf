//! Logging through `tracing`, human-readable or JSON.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber once; later calls (several services in one process,
/// tests) keep the first. `RUST_LOG` overrides `log.level`. Logs go to stderr so that
/// commands printing data (`opsmesh tail`) keep stdout clean.
pub fn init(settings: &LogSettings) {
    init_to(settings, std::io::stderr, true);
}

/// As [`init`], writing to `writer` (a log file: `ansi` false, no colour codes in it).
pub fn init_to<W>(settings: &LogSettings, writer: W, ansi: bool)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
    // Already installed: keep the first subscriber.
    drop(result);
}
