//! What investigations cost, how they end, and what validation discarded.

use prometheus::{Counter, IntCounterVec, Registry};
use strum::VariantArray;

use opsmesh_proto::investigation::{InvestigationState, InvestigationStep};
use opsmesh_runtime::metrics::{counter_vec, register};

use super::{report::Discard, tools};

/// How a tool call ended (the `outcome` label).
#[derive(Debug, Clone, Copy, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub(super) enum ToolOutcome {
    Ran,
    /// Refused before it ran: forbidden SPL, a namespace or kind not allowed, a repeat.
    Refused,
    /// Ran and failed (Splunk or the API server answered with an error).
    Failed,
}

#[derive(Clone)]
pub(super) struct InvestigatorMetrics {
    investigations: IntCounterVec,
    tool_calls: IntCounterVec,
    discarded: IntCounterVec,
    tokens: IntCounterVec,
    cost: Counter,
}

impl InvestigatorMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let metrics = Self {
            investigations: counter_vec(
                registry,
                "diagnoser_investigations_total",
                "Investigations by final state (completed, failed, over_budget)",
                &["state"],
            ),
            tool_calls: counter_vec(
                registry,
                "diagnoser_investigation_tool_calls_total",
                "Tool calls the investigator's model asked for, by tool and outcome (ran, \
                 refused, failed)",
                &["tool", "outcome"],
            ),
            discarded: counter_vec(
                registry,
                "diagnoser_investigation_discarded_total",
                "Report items validation discarded, by reason",
                &["reason"],
            ),
            tokens: counter_vec(
                registry,
                "diagnoser_investigation_tokens_total",
                "Tokens the investigator's model calls took, by kind (prompt, completion)",
                &["kind"],
            ),
            cost: register(
                registry,
                Counter::new(
                    "diagnoser_investigation_cost_usd_total",
                    "What investigations cost at diagnoser.llm's prices, in USD",
                )
                .expect("valid counter"),
            ),
        };
        for state in [
            InvestigationState::Completed,
            InvestigationState::Failed,
            InvestigationState::OverBudget,
        ] {
            metrics
                .investigations
                .with_label_values(&[<&str>::from(state)]);
        }
        for reason in Discard::VARIANTS {
            metrics.discarded.with_label_values(&[<&str>::from(reason)]);
        }
        for kind in ["prompt", "completion"] {
            metrics.tokens.with_label_values(&[kind]);
        }
        metrics
    }

    pub(super) fn tool_call(&self, tool: &str, outcome: ToolOutcome) {
        // The model names the tool: an unknown name is one series, not one per invention.
        let tool = if tools::NAMES.contains(&tool) {
            tool
        } else {
            "unknown"
        };
        self.tool_calls
            .with_label_values(&[tool, outcome.into()])
            .inc();
    }

    pub(super) fn model_call(&self, step: &InvestigationStep) {
        self.tokens
            .with_label_values(&["prompt"])
            .inc_by(step.prompt_tokens);
        self.tokens
            .with_label_values(&["completion"])
            .inc_by(step.completion_tokens);
        self.cost.inc_by(step.cost_usd);
    }

    pub(super) fn discarded(&self, reason: Discard) {
        self.discarded
            .with_label_values(&[<&str>::from(reason)])
            .inc();
    }

    pub(super) fn finished(&self, state: InvestigationState) {
        self.investigations
            .with_label_values(&[<&str>::from(state)])
            .inc();
    }
}
