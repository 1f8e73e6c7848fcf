use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use opsmesh_runtime::metrics::{counter_vec, latency_buckets, register};

#[derive(Clone)]
pub struct ReceiverMetrics {
    pub received: IntCounterVec,
    pub accepted: IntCounterVec,
    pub rejected: IntCounterVec,
    /// Alert requests answered, by HTTP status code (5xx: the bus did not take the alerts).
    pub responses: IntCounterVec,
    pub duplicates: IntCounterVec,
    /// Alerts accepted whose entity fields were not usable names.
    pub unusable_entities: IntCounterVec,
    pub publish_seconds: HistogramVec,
    pub in_flight: IntGauge,
    /// Requests refused because their peer failed to authenticate too often.
    pub auth_locked_out: IntCounter,
    table_entries: IntGaugeVec,
    table_evictions: IntCounterVec,
}

/// The size and early evictions of one table keyed by what senders send.
#[derive(Clone)]
pub struct TableMetrics {
    pub entries: IntGauge,
    pub evictions: IntCounter,
}

impl ReceiverMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter_vec(registry, name, help, labels);
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
            responses: counter(
                "receiver_responses_total",
                "Alert requests answered, by HTTP status code",
                &["format", "code"],
            ),
            duplicates: counter(
                "receiver_alerts_duplicate_total",
                "Alerts answered from an earlier identical delivery, not published again",
                &["format", "source"],
            ),
            unusable_entities: counter(
                "receiver_alerts_unusable_entity_total",
                "Alerts accepted with entity fields that are not usable names (escalated, \
                 never acted on)",
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
            auth_locked_out: register(
                registry,
                IntCounter::new(
                    "receiver_auth_locked_out_total",
                    "Requests answered 429 because their peer failed to authenticate \
                     receiver.failed_auth.max_failures times within the window",
                )
                .expect("valid counter"),
            ),
            table_entries: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "receiver_table_entries",
                        "Entries in a table keyed by what senders send",
                    ),
                    &["table"],
                )
                .expect("valid gauge"),
            ),
            table_evictions: counter(
                "receiver_table_evictions_total",
                "Entries dropped from a full table before they expired (its capacity is \
                 configured under receiver.*)",
                &["table"],
            ),
        }
    }

    /// The metrics of table `name` (`deliveries`, `signatures`, `failed_auth_peers`).
    pub fn table(&self, name: &str) -> TableMetrics {
        TableMetrics {
            entries: self.table_entries.with_label_values(&[name]),
            evictions: self.table_evictions.with_label_values(&[name]),
        }
    }
}
