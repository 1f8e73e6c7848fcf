//! What the diagnoser publishes and how long diagnosing takes (its tables' metrics are in
//! `tables`, the LLM advisor's in `llm`).

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Registry};
use strum::VariantArray;

use opsmesh_proto::RootCause;
use opsmesh_runtime::metrics::{counter_vec, latency_buckets, register};

#[derive(Clone)]
pub(crate) struct DiagnosisMetrics {
    published: IntCounterVec,
    seconds: Histogram,
}

impl DiagnosisMetrics {
    pub(crate) fn new(registry: &Registry) -> Self {
        let published = counter_vec(
            registry,
            "diagnoser_diagnoses_total",
            "Diagnoses of new incidents published, by root cause",
            &["root_cause"],
        );
        // Every root cause from the start, so a rate sees its first diagnosis.
        for cause in RootCause::VARIANTS {
            published.with_label_values(&[<&str>::from(cause)]);
        }
        Self {
            published,
            seconds: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "diagnoser_diagnosis_seconds",
                        "Time to diagnose a new incident: evidence searches, rules, runbook \
                         retrieval and the LLM advisor",
                    )
                    .buckets(latency_buckets()),
                )
                .expect("valid histogram"),
            ),
        }
    }

    pub(crate) fn published(&self, root_cause: RootCause, took: Duration) {
        self.published
            .with_label_values(&[<&str>::from(root_cause)])
            .inc();
        self.seconds.observe(took.as_secs_f64());
    }
}
