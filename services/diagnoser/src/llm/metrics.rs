//! What the LLM advisor costs and how its calls end, for the metrics endpoint.

use std::time::Duration;

use prometheus::{Counter, HistogramOpts, HistogramVec, IntCounterVec, Registry};
use strum::VariantArray;

use opsmesh_runtime::metrics::{counter_vec, latency_buckets, register};

/// How one consultation of the advisor ended.
#[derive(Debug, Clone, Copy, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub(super) enum Outcome {
    /// Not called: its worst-case cost exceeded a budget.
    OverBudget,
    /// The endpoint answered with an error (429s and 5xx after the client's retries).
    Failed,
    /// No answer within `diagnoser.llm.timeout`.
    TimedOut,
    /// Answered, but the reply was discarded (not the expected JSON, invented evidence, an
    /// action the runbook section does not allow).
    Rejected,
    /// Answered, and the reply was kept.
    Accepted,
}

#[derive(Clone)]
pub(super) struct LlmMetrics {
    calls: IntCounterVec,
    call_seconds: HistogramVec,
    tokens: IntCounterVec,
    cost: Counter,
}

impl LlmMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let metrics = Self {
            calls: counter_vec(
                registry,
                "diagnoser_llm_calls_total",
                "Consultations of the LLM advisor by outcome (accepted, rejected, failed, \
                 timed_out, over_budget)",
                &["outcome"],
            ),
            call_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "diagnoser_llm_call_seconds",
                        "Time the LLM endpoint took to answer, retries included, by outcome",
                    )
                    .buckets(latency_buckets()),
                    &["outcome"],
                )
                .expect("valid histogram"),
            ),
            tokens: counter_vec(
                registry,
                "diagnoser_llm_tokens_total",
                "Tokens the LLM endpoint reported, by kind (prompt, completion)",
                &["kind"],
            ),
            cost: register(
                registry,
                Counter::new(
                    "diagnoser_llm_cost_usd_total",
                    "What the LLM calls cost at diagnoser.llm's prices per million tokens, in USD",
                )
                .expect("valid counter"),
            ),
        };
        // Every series from the start, so rates and alerts see the first call.
        for outcome in Outcome::VARIANTS {
            metrics.calls.with_label_values(&[<&str>::from(outcome)]);
        }
        for kind in ["prompt", "completion"] {
            metrics.tokens.with_label_values(&[kind]);
        }
        metrics
    }

    /// A call that was not made because it would exceed a budget.
    pub(super) fn over_budget(&self) {
        self.calls
            .with_label_values(&[<&str>::from(Outcome::OverBudget)])
            .inc();
    }

    /// A call made: its outcome, duration and what it spent.
    pub(super) fn called(
        &self,
        outcome: Outcome,
        took: Duration,
        prompt_tokens: u64,
        completion_tokens: u64,
        cost_usd: f64,
    ) {
        let label: &str = outcome.into();
        self.calls.with_label_values(&[label]).inc();
        self.call_seconds
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
        self.tokens
            .with_label_values(&["prompt"])
            .inc_by(prompt_tokens);
        self.tokens
            .with_label_values(&["completion"])
            .inc_by(completion_tokens);
        self.cost.inc_by(cost_usd);
    }
}
