//! `opsmesh.investigations.v1`: the investigator's record of one investigation, one message
//! per step it took (model calls and read-only tool calls, refusals included), then the
//! validated report it ended with.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Payload, RootCause, Severity,
    diagnosis::{ActionProposal, LlmUsage},
    topics,
    vocabulary::vocabulary,
};

/// One message of an investigation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InvestigationEvent {
    /// `<incident id>/<generation>` for an incident's investigation.
    pub investigation_id: String,
    /// What the model was asked.
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub update: InvestigationUpdate,
}

impl Payload for InvestigationEvent {
    const SCHEMA: &'static str = topics::INVESTIGATIONS;
}

/// A step or the report, flat under `type` (so `payload.update.tool` names a step's tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InvestigationUpdate {
    Step(InvestigationStep),
    Report(Box<InvestigationReport>),
}

vocabulary! {
    /// Where an investigation stands: queued → running → completed | failed | over_budget.
    pub enum InvestigationState {
        Queued,
        Running,
        Completed,
        Failed,
        OverBudget,
    }
}

vocabulary! {
    /// Why the loop ended.
    pub enum StopReason {
        /// The model answered with a report.
        Answered,
        StepLimit,
        TokenLimit,
        CostLimit,
        WallTime,
        /// The model asked for the same tool call twice.
        Loop,
        /// The endpoint failed or timed out.
        ModelError,
        /// The final answer was not a report of the expected shape.
        InvalidReport,
    }
}

impl StopReason {
    /// The state an investigation that stopped for this reason ends in.
    pub fn final_state(self) -> InvestigationState {
        match self {
            Self::Answered => InvestigationState::Completed,
            Self::StepLimit | Self::TokenLimit | Self::CostLimit | Self::WallTime => {
                InvestigationState::OverBudget
            }
            Self::Loop | Self::ModelError | Self::InvalidReport => InvestigationState::Failed,
        }
    }
}

vocabulary! {
    pub enum StepKind {
        /// One chat completion.
        ModelCall,
        /// One tool call the model asked for (run, or refused).
        ToolCall,
    }
}

/// One step, as published and indexed (`opsmesh:investigation`): enough to replay the reasoning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InvestigationStep {
    /// 1, 2, … within the investigation.
    pub step: u32,
    pub kind: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The arguments the model gave, as JSON (unparseable arguments as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
    /// The id a report cites this result by; only results that ran have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_id: Option<String>,
    /// SHA-256 (hex) of the result text given back to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_digest: Option<String>,
    /// Set when the call was refused (forbidden SPL, namespace not allowed, loop) or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    pub cost_usd: f64,
}

/// A tool result a report may cite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ToolEvidence {
    /// `t1`, `t2`, … within the investigation.
    pub id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    /// The result as given to the model (truncated to the configured size).
    pub result: String,
}

/// A claim of the report and the evidence it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Finding {
    pub claim: String,
    pub evidence_ids: Vec<String>,
}

/// What one investigation concluded, after validation: every finding and proposal left cites
/// evidence that exists, and every proposal is an action the runbooks of the root cause allow,
/// on a target the tools saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InvestigationReport {
    pub state: InvestigationState,
    pub stop_reason: StopReason,
    /// The numbers behind the stop (`5200 tokens spent, over max_tokens 5000`).
    pub stop_detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub findings: Vec<Finding>,
    pub root_cause: RootCause,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Severity>,
    pub proposed_actions: Vec<ActionProposal>,
    pub evidence: Vec<ToolEvidence>,
    pub steps: Vec<InvestigationStep>,
    /// Tokens and cost of all model calls; `discarded` says what validation removed and why.
    pub usage: LlmUsage,
    /// Discarded items by reason (`unknown_evidence`, `action_outside_runbook`, …).
    #[serde(default)]
    pub discarded_by_reason: BTreeMap<String, u64>,
}
