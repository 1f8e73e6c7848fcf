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
    pub outcome: Option<ExpectedOutcome>,
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

impl std::str::FromStr for Outcome {
    type Err = String;

    /// Any state parses here; `Scenario::check` says which are not outcomes.
    fn from_str(name: &str) -> Result<Self, String> {
        if name == IncidentStatus::Cleared.to_string() {
            return Ok(Self::Cleared);
        }
        name.parse::<IncidentState>().map(Self::State).map_err(|_| {
            let mut expected: Vec<String> = OUTCOMES.iter().map(ToString::to_string).collect();
            expected.push(IncidentStatus::Cleared.to_string());
            format!(
                "unknown outcome `{name}`, expected one of {}",
                expected.join(", ")
            )
        })
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// `expect.outcome`: the outcome every incident of the run reaches (the contract), or, as a
/// project extension, a list of one outcome per incident in the order the incidents were
/// opened (a recurrence may end differently from its predecessor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedOutcome {
    Every(Outcome),
    PerIncident(Vec<Outcome>),
}

impl ExpectedOutcome {
    /// Every outcome named, in order.
    pub fn outcomes(&self) -> &[Outcome] {
        match self {
            Self::Every(outcome) => std::slice::from_ref(outcome),
            Self::PerIncident(list) => list,
        }
    }

    /// Whether the outcomes of the run's incidents (in the order they were opened; `None`:
    /// none reached) are the expected ones.
    pub fn met_by(&self, actual: &[Option<Outcome>]) -> bool {
        match self {
            Self::Every(expected) => {
                !actual.is_empty() && actual.iter().all(|a| *a == Some(*expected))
            }
            Self::PerIncident(expected) => {
                expected.len() == actual.len()
                    && expected.iter().zip(actual).all(|(e, a)| Some(*e) == *a)
            }
        }
    }
}

impl serde::Serialize for ExpectedOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Every(outcome) => outcome.serialize(s),
            Self::PerIncident(list) => list.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedOutcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, so parse errors keep their line.
        struct OneOrList;
        impl<'de> de::Visitor<'de> for OneOrList {
            type Value = ExpectedOutcome;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an outcome, or a list of one outcome per incident")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                name.parse().map(ExpectedOutcome::Every).map_err(E::custom)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::new();
                while let Some(outcome) = seq.next_element::<Outcome>()? {
                    list.push(outcome);
                }
                if list.is_empty() {
                    return Err(de::Error::custom(
                        "an empty list expects no incident: name one outcome per incident, or leave `outcome` out",
                    ));
                }
                Ok(ExpectedOutcome::PerIncident(list))
            }
        }
        d.deserialize_any(OneOrList)
    }
}
