//! `opsmesh.diagnoses.v1`: the root cause of an incident, with cited evidence.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ActionKind, Payload, RootCause, topics};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Diagnosis {
    /// Alerts (envelope ids) this incident coalesced.
    pub alert_ids: Vec<Uuid>,
    pub fingerprint: String,
    pub root_cause: RootCause,
    /// 0.0 – 1.0.
    pub confidence: f64,
    /// Target resource, `inferenceservice/<ns>/<name>`-style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// One line for humans.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// Runbook section the diagnosis follows; actions outside it are never taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<RunbookRef>,
    pub recommended_actions: Vec<ActionProposal>,
    /// Reasoning, each claim naming the evidence ids behind it.
    pub explanation: String,
    /// Narrative for the on-call engineer, written by the optional LLM (validated: it cites
    /// only evidence that exists). Absent when the LLM is off or its output was discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narrative: Option<String>,
    /// Exact YAML fix for a developer (policy violations, quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_fix: Option<String>,
    #[serde(default)]
    pub llm: LlmUsage,
}

impl Payload for Diagnosis {
    const SCHEMA: &'static str = topics::DIAGNOSES;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// The alert's own fields.
    Alert,
    /// Splunk REST export search.
    SplunkSearch,
    /// Splunk MCP Server tool call.
    SplunkMcp,
    /// A record from `opsmesh.telemetry.v1`.
    Telemetry,
}

/// One piece of evidence: what was asked, of whom, and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Evidence {
    /// Unique within the diagnosis (`ev1`, `ev2`, …); claims cite it.
    pub id: String,
    pub source: EvidenceSource,
    /// The SPL text, or the telemetry record reference.
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    pub row_count: u64,
    /// The values the diagnosis used from the result.
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    /// Set when the query failed or was degraded (e.g. Splunk unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunbookRef {
    pub id: String,
    pub version: String,
    pub section: String,
    /// SHA-256 of the section text the decision followed.
    pub content_hash: String,
}

/// An action the runbook allows, with parameters and the evidence that motivates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ActionProposal {
    pub kind: ActionKind,
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    pub evidence_ids: Vec<String>,
    pub rationale: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LlmUsage {
    pub used: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Why LLM output was discarded, if it was.
    #[serde(default)]
    pub discarded: Vec<String>,
}
