//! A scenario's verdict: each check with what was expected and what happened, the actions
//! executed, the outcome and when it was reached.

use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::Value;

use opsmesh_proto::{ActionKind, RootCause};
use opsmesh_sim::duration::format_duration;

use super::InvestigationSeen;

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

/// One incident of the run, in virtual time from the alert that opened it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentSeen {
    pub id: String,
    /// The latest diagnosis's root cause and target (none: never diagnosed).
    pub root_cause: Option<RootCause>,
    pub target: Option<String>,
    #[serde(serialize_with = "as_duration")]
    pub time_to_diagnosis: Option<Duration>,
    pub outcome: Option<String>,
    #[serde(serialize_with = "as_duration")]
    pub time_to_outcome: Option<Duration>,
    pub llm_tokens: u64,
    pub llm_cost_usd: f64,
}

fn as_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
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
    pub llm_cost_usd: f64,
    pub hec_events: usize,
    /// Each incident, in the order opened.
    pub per_incident: Vec<IncidentSeen>,
    /// Every accepted non-dry-run write the cluster received.
    pub cluster_writes: Vec<String>,
    /// The investigations the run queued, in order (absent: the investigator was off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub investigations: Option<Vec<InvestigationSeen>>,
}

impl Verdict {
    /// Why it failed: the error that stopped the run, else the names of the failed checks.
    pub fn failure(&self) -> String {
        self.error.clone().unwrap_or_else(|| {
            let failed: Vec<&str> = self
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            failed.join(", ")
        })
    }

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
            llm_cost_usd: 0.0,
            hec_events: 0,
            per_incident: Vec::new(),
            cluster_writes: Vec::new(),
            investigations: None,
        }
    }
}
