//! The HEC writer's metrics (registered once per application, names prefixed `opsmesh_`).

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Registry};

use opsmesh_runtime::metrics::{self, latency_buckets, register};

#[derive(Clone)]
pub struct WriterMetrics {
    /// Events Splunk accepted (or acknowledged), by sourcetype.
    pub events: IntCounterVec,
    /// Batches settled, by outcome: `delivered`, `partial` (some events dead-lettered),
    /// `abandoned` (shutdown before Splunk took it; redelivered after the restart).
    pub batches: IntCounterVec,
    /// HEC requests by outcome: `accepted`, `busy`, `network_error`, `refused`, `partial`,
    /// `rejected`, `file_error`.
    pub requests: IntCounterVec,
    pub request_seconds: Histogram,
    pub batch_events: Histogram,
    pub batch_bytes: Histogram,
    /// Events sent to `<topic>.dlq`, by reason (`poison`, `rejected`).
    pub dead_lettered: IntCounterVec,
    /// Redelivered envelopes dropped before reaching Splunk a second time.
    pub duplicates: IntCounter,
    /// Age (event time) of the oldest event received and not yet accepted by Splunk.
    pub oldest_unsent: Gauge,
    /// Events received and not yet accepted by Splunk.
    pub unsent: IntGauge,
    /// Messages received whose offsets are not stored yet (in hand, not the bus lag: that is
    /// `bus_consumer_lag`).
    pub in_hand: IntGauge,
    /// 1 while Splunk takes events (last request or health check succeeded).
    pub up: IntGauge,
    /// 1 while Splunk refuses the token or configuration and consumption is paused.
    pub paused: IntGauge,
    pub acks_pending: IntGauge,
    /// Batches sent again because their acknowledgement did not come in time.
    pub ack_timeouts: IntCounter,
}

impl WriterMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            register(
                registry,
                IntCounter::new(name, help).expect("valid counter"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            metrics::counter_vec(registry, name, help, labels)
        };
        let gauge =
            |name: &str, help: &str| register(registry, IntGauge::new(name, help).expect("gauge"));
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid histogram"),
            )
        };
        Self {
            events: counter_vec(
                "reporter_hec_events_total",
                "Events accepted by Splunk HEC, by sourcetype",
                &["sourcetype"],
            ),
            batches: counter_vec(
                "reporter_hec_batches_total",
                "HEC batches settled, by outcome (delivered, partial, abandoned)",
                &["outcome"],
            ),
            requests: counter_vec(
                "reporter_hec_requests_total",
                "HEC requests by outcome",
                &["outcome"],
            ),
            request_seconds: histogram(
                "reporter_hec_request_seconds",
                "Time of one HEC request",
                latency_buckets(),
            ),
            batch_events: histogram(
                "reporter_hec_batch_events",
                "Events per HEC batch",
                vec![1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0],
            ),
            batch_bytes: histogram(
                "reporter_hec_batch_bytes",
                "Uncompressed bytes per HEC batch",
                vec![1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 9e5, 2e6],
            ),
            dead_lettered: counter_vec(
                "reporter_hec_dead_lettered_total",
                "Events sent to the DLQ instead of Splunk, by reason",
                &["reason"],
            ),
            duplicates: counter(
                "reporter_hec_duplicates_total",
                "Redelivered envelopes dropped before reaching Splunk twice",
            ),
            oldest_unsent: register(
                registry,
                Gauge::new(
                    "reporter_hec_oldest_unsent_seconds",
                    "Age of the oldest event received and not yet accepted by Splunk",
                )
                .expect("gauge"),
            ),
            unsent: gauge(
                "reporter_hec_unsent_events",
                "Events received and not yet accepted by Splunk",
            ),
            in_hand: gauge(
                "reporter_hec_in_hand_messages",
                "Messages the HEC writer received whose offsets are not stored yet (what waits \
                 on the bus is bus_consumer_lag)",
            ),
            up: gauge(
                "reporter_hec_up",
                "1 while Splunk HEC takes events, 0 while it is unreachable, busy or refusing",
            ),
            paused: gauge(
                "reporter_hec_paused",
                "1 while HEC refuses the token or configuration and consumption is paused",
            ),
            acks_pending: gauge(
                "reporter_hec_acks_pending",
                "Batches accepted by HEC and waiting for indexer acknowledgement",
            ),
            ack_timeouts: counter(
                "reporter_hec_ack_timeouts_total",
                "Batches sent again because their indexer acknowledgement did not come in time",
            ),
        }
    }
}
