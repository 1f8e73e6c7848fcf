use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use opsmesh_runtime::metrics::{latency_buckets, register};

#[derive(Clone)]
pub struct ReceiverMetrics {
    pub received: IntCounterVec,
    pub accepted: IntCounterVec,
    pub rejected: IntCounterVec,
    pub duplicates: IntCounterVec,
    pub publish_seconds: HistogramVec,
    pub in_flight: IntGauge,
}

impl ReceiverMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        Self {
            received: counter(
                "receiver_requests_total",
                "Alert requests received",
                &["format"],
            ),
            accepted: counter(
                "receiver_alerts_accepted_total",
                "Alerts acknowledged by the bus and answered 202",
                &["format", "source"],
            ),
            rejected: counter(
                "receiver_requests_rejected_total",
                "Alert requests refused, by source and reason",
                &["format", "source", "reason"],
            ),
            duplicates: counter(
                "receiver_alerts_duplicate_total",
                "Alerts answered from an earlier identical delivery, not published again",
                &["format", "source"],
            ),
            publish_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "receiver_publish_seconds",
                        "Time from request to bus acknowledgement of all its alerts",
                    )
                    .buckets(latency_buckets()),
                    &["format"],
                )
                .expect("valid histogram"),
            ),
            in_flight: register(
                registry,
                IntGauge::new(
                    "receiver_requests_in_flight",
                    "Alert requests being handled",
                )
                .expect("valid gauge"),
            ),
        }
    }
}
