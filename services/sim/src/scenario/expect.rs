//! What a scenario expects (incidents, root cause, actions, outcome, deadline), the outcomes
//! it may name, and the remediation policy it runs under.

use serde::{Deserialize, Deserializer, de};

use opsmesh_proto::{
    ActionKind, IncidentState, RootCause, incident::IncidentStatus, remediation::ActionMode,
};

use super::Dur;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub incidents: Option<u32>,
    #[serde(default)]
    pub root_cause: Option<RootCause>,
    #[serde(default)]
    pub actions: Option<Vec<ExpectedAction>>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub within: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAction {
    pub kind: ActionKind,
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default = "auto")]
    pub mode: ActionMode,
    #[serde(default)]
    pub allowed_namespaces: Option<Vec<String>>,
}

fn auto() -> ActionMode {
    ActionMode::Auto
}

/// The outcomes a scenario may expect.
pub const OUTCOMES: &[IncidentState] = &[
    IncidentState::Resolved,
    IncidentState::Advised,
    IncidentState::Escalated,
    IncidentState::NoAction,
    IncidentState::AwaitingApproval,
    IncidentState::DryRun,
    IncidentState::Refused,
];

/// Where an incident ended up: a remediator state, or `cleared` when the sender ended it
/// (only the diagnoser's incident record says so; the remediator keeps no record of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    State(IncidentState),
    Cleared,
}

impl Outcome {
    /// Whether an incident in this state has an outcome a scenario may expect (rather than
    /// being still on its way).
    pub fn is_final(self) -> bool {
        match self {
            Self::State(state) => OUTCOMES.contains(&state),
            Self::Cleared => true,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::State(state) => state.fmt(f),
            // The incident record's wire name, so the verdict reads as the topic does.
            Self::Cleared => IncidentStatus::Cleared.fmt(f),
        }
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == IncidentStatus::Cleared.to_string() {
            return Ok(Self::Cleared);
        }
        // Any state parses here; `Scenario::check` says which are not outcomes.
        name.parse::<IncidentState>().map(Self::State).map_err(|_| {
            let mut expected: Vec<String> = OUTCOMES.iter().map(ToString::to_string).collect();
            expected.push(IncidentStatus::Cleared.to_string());
            de::Error::custom(format!(
                "unknown outcome `{name}`, expected one of {}",
                expected.join(", ")
            ))
        })
    }
}
