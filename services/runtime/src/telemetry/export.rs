//! The OTLP/HTTP span exporter, batched on the SDK's own thread, counted in every service's
//! metrics.

use std::{sync::LazyLock, time::Duration};

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanExporter},
};
use prometheus::{IntCounter, Registry};

use super::{OtlpSettings, TelemetryError};

/// Spans handed to the receiver, and spans lost because their export failed. Process-wide,
/// like the exporter: every service of the process shows the same counts.
struct ExportMetrics {
    exported: IntCounter,
    failed: IntCounter,
}

static METRICS: LazyLock<ExportMetrics> = LazyLock::new(|| ExportMetrics {
    exported: IntCounter::new(
        "telemetry_spans_exported_total",
        "Spans the OTLP receiver accepted",
    )
    .expect("valid counter"),
    failed: IntCounter::new(
        "telemetry_spans_export_failed_total",
        "Spans lost because their OTLP export failed (receiver down, refused or too slow)",
    )
    .expect("valid counter"),
});

/// Adds the span export counters to a service's registry.
pub fn register_metrics(registry: &Registry) {
    crate::metrics::register(registry, METRICS.exported.clone());
    crate::metrics::register(registry, METRICS.failed.clone());
}

/// The OTLP exporter, counting what it sends.
#[derive(Debug)]
pub(super) struct CountedExporter(opentelemetry_otlp::SpanExporter);

impl SpanExporter for CountedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        // The SDK logs the error itself (target `opentelemetry_sdk`).
        match &result {
            Ok(()) => METRICS.exported.inc_by(spans),
            Err(_) => METRICS.failed.inc_by(spans),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// An exporter posting protobuf to `<endpoint>/v1/traces`.
pub(super) fn exporter(
    settings: &OtlpSettings,
    endpoint: &str,
) -> Result<CountedExporter, TelemetryError> {
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces)
        .with_timeout(settings.timeout)
        .build()
        .map(CountedExporter)
        .map_err(|err| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            message: err.to_string(),
        })
}

/// Batches finished spans on the SDK's export thread: a slow receiver never holds up a
/// request or a message.
pub(super) fn processor(exporter: CountedExporter, settings: &OtlpSettings) -> BatchSpanProcessor {
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(settings.scheduled_delay)
        .with_max_queue_size(settings.max_queue_size)
        .with_max_export_batch_size(settings.max_export_batch_size)
        .build();
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build()
}
