//! Logging and tracing through `tracing`: log lines human-readable or JSON, each written inside
//! a span carrying its trace and span ids; spans exported over OTLP/HTTP (protobuf) when
//! `telemetry.otlp.endpoint` is set. Spans are linked across services by the W3C
//! `traceparent` of Kafka headers and HTTP requests (see [`context`]).

pub mod context;
mod export;
mod log_format;

use std::time::Duration;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use serde::Deserialize;
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, filter_fn},
    fmt,
    prelude::*,
};

use crate::{
    config::{ConfigError, Validate},
    settings::{LogFormat, LogSettings, Settings},
};

pub use context::{current_trace, traceparent_for};
pub use export::register_metrics;
use log_format::WithTraceIds;

/// `telemetry`: where spans go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub otlp: OtlpSettings,
}

impl Validate for TelemetrySettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.otlp.validate(&format!("{prefix}.otlp"))
    }
}

/// `telemetry.otlp`: the OTLP/HTTP receiver spans are exported to, and the export batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSettings {
    /// Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector's `http://host:4318`);
    /// spans are posted to `<endpoint>/v1/traces`. Unset or empty: nothing is exported.
    pub endpoint: Option<String>,
    /// Longest one export request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Finished spans are sent at least this often.
    #[serde(with = "humantime_serde")]
    pub scheduled_delay: Duration,
    /// Finished spans waiting to be sent; beyond it new spans are dropped (with a warning).
    pub max_queue_size: usize,
    /// Spans per export request.
    pub max_export_batch_size: usize,
}

impl Default for OtlpSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            timeout: Duration::from_secs(10),
            scheduled_delay: Duration::from_secs(5),
            max_queue_size: 2048,
            max_export_batch_size: 512,
        }
    }
}

impl OtlpSettings {
    /// The configured endpoint, if export is on.
    fn endpoint(&self) -> Option<&str> {
        self.endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }
}

impl Validate for OtlpSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(endpoint) = self.endpoint() {
            let url = url::Url::parse(endpoint).map_err(|err| {
                ConfigError::invalid(
                    format!("{prefix}.endpoint"),
                    format!("{endpoint:?} is not a URL: {err}"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    format!("{prefix}.endpoint"),
                    format!("must be an http:// or https:// URL, not {endpoint:?}"),
                ));
            }
        }
        for (key, value) in [
            ("timeout", self.timeout),
            ("scheduled_delay", self.scheduled_delay),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    "must be longer than 0s",
                ));
            }
        }
        if self.max_queue_size == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_queue_size"),
                "must be at least 1",
            ));
        }
        if self.max_export_batch_size == 0 || self.max_export_batch_size > self.max_queue_size {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_export_batch_size"),
                format!(
                    "must be between 1 and {prefix}.max_queue_size ({})",
                    self.max_queue_size
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot export spans to `telemetry.otlp.endpoint` {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// The process's tracer provider; [`Tracing::shutdown`] sends the spans still queued.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// Bound of the final export; `None` when nothing is exported.
    flush_within: Option<Duration>,
}

impl Tracing {
    /// Exports the spans still queued (within `telemetry.otlp.timeout`) and stops the
    /// exporter; for the end of a graceful stop, once the work has drained.
    pub async fn shutdown(self) {
        let Some(within) = self.flush_within else {
            return;
        };
        // The SDK waits for its export thread synchronously: off the async workers.
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within))
            .await
            .map_err(|err| err.to_string())
            .and_then(|result| result.map_err(|err| err.to_string()));
        if let Err(error) = flushed {
            tracing::warn!(%error, "the last spans were not exported");
        }
    }
}

/// Installs logging (no span export) once per process; later calls (several services in one
/// process, tests) keep the first. `RUST_LOG` overrides `log.level`. Logs go to stderr so
/// that commands printing data (`opsmesh tail`) keep stdout clean.
pub fn init(settings: &LogSettings) {
    init_to(settings, std::io::stderr, true);
}

/// As [`init`], writing to `writer` (a log file: `ansi` false, no colour codes in it).
pub fn init_to<W>(settings: &LogSettings, writer: W, ansi: bool)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let provider = provider(None, "opsmesh", None);
    install(settings, &provider, writer, ansi);
}

/// As [`init`] for a process running `service` (its `service.name` is `opsmesh-<service>`,
/// or `opsmesh` for several), exporting spans when `telemetry.otlp.endpoint` is set.
pub fn init_service(settings: &Settings, service: &str) -> Result<Tracing, TelemetryError> {
    let otlp = &settings.telemetry.otlp;
    let exporter = match otlp.endpoint() {
        Some(endpoint) => Some(export::exporter(otlp, endpoint)?),
        None => None,
    };
    let flush_within = exporter.is_some().then_some(otlp.timeout);
    let provider = provider(
        exporter.map(|exporter| (exporter, otlp)),
        service,
        Some(&settings.cluster),
    );
    install(&settings.log, &provider, std::io::stderr, true);
    if let Some(endpoint) = otlp.endpoint() {
        tracing::info!(endpoint, "exporting spans over OTLP/HTTP");
    }
    Ok(Tracing {
        provider,
        flush_within,
    })
}

/// Every span is recorded (unless an inbound `traceparent` says it is not sampled): with no
/// exporter, the provider has no processor and a finished span is simply dropped, while its
/// ids still reach the logs and the next service.
fn provider(
    exporter: Option<(export::CountedExporter, &OtlpSettings)>,
    service: &str,
    cluster: Option<&str>,
) -> SdkTracerProvider {
    let mut resource = Resource::builder().with_service_name(service.to_owned());
    if let Some(cluster) = cluster {
        resource = resource.with_attribute(KeyValue::new("k8s.cluster.name", cluster.to_owned()));
    }
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource.build());
    if let Some((exporter, settings)) = exporter {
        builder = builder.with_span_processor(export::processor(exporter, settings));
    }
    builder.build()
}

/// opsmesh's spans at INFO and above become OpenTelemetry spans whatever `log.level` says
/// (libraries' own spans do not: an MCP session's would stay open for hours); of events,
/// only warnings and errors are added to their span.
fn traced(metadata: &Metadata<'_>) -> bool {
    if metadata.is_span() {
        metadata.target().starts_with("opsmesh") && *metadata.level() <= Level::INFO
    } else {
        *metadata.level() <= Level::WARN
    }
}

fn install<W>(settings: &LogSettings, provider: &SdkTracerProvider, writer: W, ansi: bool)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let level = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines show events only: the ids say which span a line belongs to, and the spans' names
    // and fields would repeat on every line.
    let filter = level.and(filter_fn(|metadata| metadata.is_event()));
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("opsmesh"))
        // Thread names and busy/idle timings would cost an allocation or a clock read per span.
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(traced));
    let registry = tracing_subscriber::registry().with(spans);
    let result = match settings.format {
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(false)
                    .map_event_format(|format| WithTraceIds::human(format.with_ansi(ansi)))
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer)
                    .map_event_format(WithTraceIds::json)
                    .with_filter(filter),
            )
            .try_init(),
    };
    // Already installed: keep the first subscriber.
    drop(result);
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigTree, tests::env};

    fn settings(pairs: &[(&str, &str)]) -> Result<crate::Settings, String> {
        let mut pairs = pairs.to_vec();
        pairs.push(("OPSMESH__BUS__KIND", "memory"));
        ConfigTree::load_with_env(None, env(&pairs))
            .unwrap()
            .settings()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.telemetry.otlp.endpoint(), None);
        let blank = settings(&[("OPSMESH__TELEMETRY__OTLP__ENDPOINT", " ")]).unwrap();
        assert_eq!(blank.telemetry.otlp.endpoint(), None);
        let set = settings(&[(
            "OPSMESH__TELEMETRY__OTLP__ENDPOINT",
            "http://otel-collector:4318",
        )])
        .unwrap();
        assert_eq!(
            set.telemetry.otlp.endpoint(),
            Some("http://otel-collector:4318")
        );
    }

    #[test]
    fn bad_export_settings_are_named() {
        for (key, value, named) in [
            ("ENDPOINT", "otel-collector:4318", "telemetry.otlp.endpoint"),
            ("ENDPOINT", "not a url", "telemetry.otlp.endpoint"),
            ("SCHEDULED_DELAY", "0s", "telemetry.otlp.scheduled_delay"),
            (
                "MAX_EXPORT_BATCH_SIZE",
                "5000",
                "telemetry.otlp.max_export_batch_size",
            ),
        ] {
            let err =
                settings(&[(&format!("OPSMESH__TELEMETRY__OTLP__{key}"), value)]).unwrap_err();
            assert!(err.contains(&format!("`{named}`")), "{key}={value}: {err}");
        }
    }
}
