//! A scenario's verdict: each check with what was expected and what happened, the actions
//! executed, the outcome and when it was reached.

use serde::Serialize;
use serde_json::Value;

use opsmesh_proto::ActionKind;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub expected: Value,
    pub actual: Value,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionSeen {
    pub kind: ActionKind,
    pub target: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub scenario: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checks: Vec<Check>,
    pub incidents: usize,
    pub actions: Vec<ActionSeen>,
    pub outcome: Option<String>,
    pub time_to_outcome: Option<String>,
    pub llm_tokens: u64,
    pub hec_events: usize,
}

impl Verdict {
    /// A scenario that could not be played (or loaded): `error` says why.
    pub fn failed(name: String, error: String) -> Self {
        Self {
            scenario: name,
            passed: false,
            error: Some(error),
            checks: Vec::new(),
            incidents: 0,
            actions: Vec::new(),
            outcome: None,
            time_to_outcome: None,
            llm_tokens: 0,
            hec_events: 0,
        }
    }
}
