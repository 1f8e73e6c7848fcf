//! `opsmesh.investigation-requests.v1`: the queue of investigations to run (from the diagnoser
//! for an unsure diagnosis, `opsmesh investigate`, the console and the MCP server), and
//! `opsmesh.investigations.v1`: the investigator's record of one investigation — when it
//! started running, one message per step it took (model calls and read-only tool calls,
//! refusals included), then the validated report it ended with.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Payload, RootCause, Severity,
    diagnosis::{ActionProposal, LlmUsage},
    topics,
    vocabulary::vocabulary,
};

/// Longest question a request may ask (characters).
pub const MAX_QUESTION_CHARS: usize = 2000;

/// An investigation to run: queued until the diagnoser's investigator takes it up. Every
/// request is answered on `opsmesh.investigations.v1` under the same `investigation_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InvestigationRequest {
    /// `<incident id>/<generation>` for an unsure diagnosis, `inv-<uuid>` on demand.
    pub investigation_id: String,
    /// The incident to investigate (its alert, diagnosis and history are the facts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// What to find out; absent for an incident: why it happened and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// The namespace the question is about (one the investigator may read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Who asked: `diagnoser`, `cli:<user>`, `console:<user>`, `mcp:<token holder>`.
    pub requested_by: String,
    /// What the requester already knows (the alert, the rules' diagnosis), served to the model
    /// by the `incident_facts` tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<serde_json::Value>,
}

impl Payload for InvestigationRequest {
    const SCHEMA: &'static str = topics::INVESTIGATION_REQUESTS;
}

impl InvestigationRequest {
    /// Checks what a requester controls; the error names the field and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.investigation_id.trim().is_empty() {
            return Err("investigation_id: must not be empty".into());
        }
        if let Some(id) = &self.incident_id
            && id.trim().is_empty()
        {
            return Err("incident_id: must not be empty".into());
        }
        if self.incident_id.is_none() && self.question.is_none() {
            return Err("question: needed when no incident_id is given".into());
        }
        if let Some(question) = &self.question {
            if question.trim().is_empty() {
                return Err("question: must not be empty".into());
            }
            let chars = question.chars().count();
            if chars > MAX_QUESTION_CHARS {
                return Err(format!(
                    "question: {chars} characters, at most {MAX_QUESTION_CHARS}"
                ));
            }
        }
        if let Some(ns) = &self.namespace
            && !crate::name::is_dns_label(ns)
        {
            return Err(format!("namespace: {ns:?} is not a namespace name"));
        }
        if self.requested_by.trim().is_empty() {
            return Err("requested_by: must not be empty".into());
        }
        Ok(())
    }
}

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

/// A state change, a step or the report, flat under `type` (so `payload.update.tool` names a
/// step's tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InvestigationUpdate {
    /// The investigator took the request up (`running`), or could not run it (`failed`).
    Status(InvestigationStatus),
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

/// Where a request stands before its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InvestigationStatus {
    pub state: InvestigationState,
    /// Who asked (from the request).
    pub requested_by: String,
    /// Why (a failure's cause; `attempt 2` when a restart re-runs it).
    pub detail: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> InvestigationRequest {
        InvestigationRequest {
            investigation_id: "inv-1".into(),
            incident_id: None,
            question: Some("Why does ml-team-a cost so much?".into()),
            namespace: Some("ml-team-a".into()),
            requested_by: "cli:alice".into(),
            facts: None,
        }
    }

    /// The field a bad request is refused for.
    fn refused(adjust: impl FnOnce(&mut InvestigationRequest)) -> String {
        let mut r = request();
        adjust(&mut r);
        let e = r.validate().expect_err("accepted");
        e.split(':').next().unwrap().to_owned()
    }

    #[test]
    fn a_bad_request_names_its_field() {
        request().validate().unwrap();
        assert_eq!(refused(|r| r.question = None), "question");
        assert_eq!(refused(|r| r.question = Some("  ".into())), "question");
        assert_eq!(refused(|r| r.question = Some("x".repeat(2001))), "question");
        assert_eq!(
            refused(|r| r.namespace = Some("Not_NS".into())),
            "namespace"
        );
        assert_eq!(
            refused(|r| r.investigation_id = String::new()),
            "investigation_id"
        );
        assert_eq!(refused(|r| r.requested_by = " ".into()), "requested_by");
        let by_incident = InvestigationRequest {
            incident_id: Some("abc".into()),
            question: None,
            ..request()
        };
        by_incident.validate().unwrap();
        let blank_incident = InvestigationRequest {
            incident_id: Some(" ".into()),
            ..by_incident
        };
        assert_eq!(
            blank_incident.validate().unwrap_err(),
            "incident_id: must not be empty"
        );
    }
}
