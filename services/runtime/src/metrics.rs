//! The application's Prometheus registry and the bus metrics every service shares.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, core::Collector,
};

use crate::bus::DlqSizes;

/// Registers `metric` and returns it. Names are fixed in code, so a clash is a programming
/// error caught by the first test that builds the service.
pub fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered twice");
    metric
}

/// Registers a counter family (see [`register`]).
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
    )
}

/// Latency buckets from 100 µs to 30 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ]
}

#[derive(Clone)]
pub struct BusMetrics {
    pub published: IntCounterVec,
    pub publish_errors: IntCounterVec,
    pub publish_seconds: HistogramVec,
    /// Outcome per consumed message: `handled`, `duplicate`, `dead_lettered`.
    pub consumed: IntCounterVec,
    pub handler_retries: IntCounterVec,
    pub handler_seconds: HistogramVec,
    pub dead_lettered: IntCounterVec,
    pub in_flight: IntGaugeVec,
    /// Handled messages whose background work has not settled yet (their offsets wait).
    pub deferred: IntGaugeVec,
    /// Messages waiting in the DLQs of the topics this process consumes.
    pub dlq_sizes: DlqSizes,
}

impl BusMetrics {
    pub fn new(registry: &Registry) -> Self {
        let latency = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(latency_buckets()),
                    labels,
                )
                .expect("valid histogram"),
            )
        };
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter_vec(registry, name, help, labels);
        Self {
            published: counter(
                "bus_published_total",
                "Messages acknowledged by the bus",
                &["topic"],
            ),
            publish_errors: counter(
                "bus_publish_errors_total",
                "Publishes the bus did not acknowledge",
                &["topic"],
            ),
            publish_seconds: latency(
                "bus_publish_seconds",
                "Time from publish to broker acknowledgement",
                &["topic"],
            ),
            consumed: counter(
                "bus_consumed_total",
                "Consumed messages by outcome (handled, duplicate, dead_lettered)",
                &["group", "topic", "outcome"],
            ),
            handler_retries: counter(
                "bus_handler_retries_total",
                "Handler attempts retried after a transient error",
                &["group", "topic"],
            ),
            handler_seconds: latency(
                "bus_handler_seconds",
                "Handler time per message, retries included",
                &["group", "topic"],
            ),
            dead_lettered: counter(
                "bus_dead_lettered_total",
                "Messages sent to the DLQ by reason",
                &["group", "topic", "reason"],
            ),
            in_flight: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("bus_handlers_in_flight", "Messages being handled"),
                    &["group"],
                )
                .expect("valid gauge"),
            ),
            deferred: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "bus_messages_deferred",
                        "Handled messages whose background work has not settled; their offsets are not committed yet",
                    ),
                    &["group"],
                )
                .expect("valid gauge"),
            ),
            dlq_sizes: DlqSizes::new(registry),
        }
    }

    /// Gives a consumer group's dead-letter series of each topic a 0, so that alerting on
    /// `increase(bus_consumed_total{outcome="dead_lettered"})` sees its first dead letter, and
    /// measures the DLQ of each topic from now on.
    pub fn consumer_started(&self, group: &str, topics: &[&str]) {
        for topic in topics {
            self.consumed
                .with_label_values(&[group, topic, "dead_lettered"]);
            self.dlq_sizes.watch(opsmesh_proto::topics::dlq(topic));
        }
    }
}

/// A fresh registry whose metric names are prefixed `opsmesh_`.
pub fn new_registry() -> Registry {
    Registry::new_custom(Some("opsmesh".into()), None).expect("valid prefix")
}
