//! Scenario files (the contract in `scenarios/README.md`): initial cluster state, injected
//! faults, alerts and expectations. Unknown keys and missing required keys are errors naming
//! the key and its line; a bad file never panics.
//!
//! This module holds the file and its loading; the cluster state, faults, alerts and
//! expectations each have a submodule.

mod alert;
mod expect;
mod fault;
mod state;
#[cfg(test)]
mod tests;

use std::{path::Path, time::Duration};

use serde::{Deserialize, Deserializer, de};
use serde_json::Value;
use serde_saphyr::Spanned;

use opsmesh_proto::{Target, alert::AlertStatus, quantity::parse_bytes};

use crate::duration::parse_duration;

pub use alert::{AlertSpec, Via};
pub use expect::{Expect, ExpectedAction, ExpectedOutcome, OUTCOMES, Outcome, PolicySpec};
pub use fault::{Api, Fault, FaultKindName, FaultSpec};
pub use state::{
    ArgoAppSpec, ClusterState, HealthStatus, InferenceServiceSpec, NamespaceSpec, PolicyAction,
    PolicyDef, SyncStatus,
};

/// A file that could not be loaded as a scenario.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {message}", location(*.line, *.column))]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// `90s`, `5m`, `1h` (or a number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => parse_duration(&s).map(Dur).map_err(de::Error::custom),
            Value::Number(n) => n
                .as_f64()
                .filter(|v| *v >= 0.0)
                .map(|v| Dur(Duration::from_secs_f64(v)))
                .ok_or_else(|| de::Error::custom("a duration must not be negative")),
            other => Err(de::Error::custom(format!(
                "expected a duration like 90s, 5m or 1h, got {other}"
            ))),
        }
    }
}

/// A Kubernetes memory quantity in bytes (`512Mi`, `1Gi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => parse_bytes(&s).map(Bytes).map_err(de::Error::custom),
            Value::Number(n) => n
                .as_u64()
                .map(Bytes)
                .ok_or_else(|| de::Error::custom("a quantity must be a non-negative integer")),
            other => Err(de::Error::custom(format!(
                "expected a quantity like 512Mi or 1Gi, got {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_cluster")]
    pub cluster: String,
    #[serde(default)]
    pub state: ClusterState,
    #[serde(default)]
    pub faults: Vec<Spanned<FaultSpec>>,
    #[serde(default)]
    pub alerts: Vec<Spanned<AlertSpec>>,
    pub expect: Expect,
    #[serde(default)]
    pub policy: Option<PolicySpec>,
    /// Virtual seconds per real second while the runner waits (its `--speed` overrides it):
    /// slow enough that a fault lasting virtual seconds lasts real ones for the mesh, whose
    /// retries and timeouts run on the wall clock.
    #[serde(default)]
    pub speed: Option<f64>,
}

fn default_cluster() -> String {
    "default".into()
}

fn one() -> u32 {
    1
}

/// Finds the line of the first `key:` in `text` (for errors serde cannot place).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&needle) || t.starts_with(&format!("{{{needle}"))
        })
        .map(|i| i + 1)
}

impl Scenario {
    /// Parses and checks a scenario. `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ScenarioError> {
        let err = |line: Option<usize>, column: Option<usize>, message: String| ScenarioError {
            file: file.to_owned(),
            line,
            column,
            message,
        };
        let scenario: Scenario = serde_saphyr::from_str(text).map_err(|e| {
            let message = e.to_string();
            let (line, column) = match e.location() {
                Some(loc) if loc.line() > 0 => {
                    (Some(loc.line() as usize), Some(loc.column() as usize))
                }
                _ => {
                    // Missing or unknown keys: name them and find the line of their parent.
                    let key = message
                        .split('`')
                        .nth(1)
                        .map(str::to_owned)
                        .unwrap_or_default();
                    (line_of_key(text, &key), None)
                }
            };
            err(line, column, first_line(&message))
        })?;
        scenario
            .check(text)
            .map_err(|(line, message)| err(line, None, message))?;
        Ok(scenario)
    }

    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// What serde cannot check; `text` (the file) places top-level keys.
    fn check(&self, text: &str) -> Result<(), (Option<usize>, String)> {
        if self.name.trim().is_empty() {
            return Err((None, "name: must not be empty".into()));
        }
        for (i, f) in self.faults.iter().enumerate() {
            f.value.resolve().map_err(|m| {
                (
                    Some(f.referenced.line() as usize),
                    format!("faults[{i}].{m}"),
                )
            })?;
        }
        for (i, a) in self.alerts.iter().enumerate() {
            if a.value.repeat == 0 {
                return Err((
                    Some(a.referenced.line() as usize),
                    format!("alerts[{i}].repeat: must be at least 1"),
                ));
            }
            if a.value.status == AlertStatus::Resolved && a.value.via != Via::Alertmanager {
                // Splunk alert actions and webhooks fire; they have no message for "over".
                return Err((
                    Some(a.referenced.line() as usize),
                    format!(
                        "alerts[{i}].status: `resolved` needs via: alertmanager; Splunk alerts only fire"
                    ),
                ));
            }
            if a.value.rows.is_empty() {
                return Err((
                    Some(a.referenced.line() as usize),
                    format!("alerts[{i}].rows: at least one row is required"),
                ));
            }
        }
        if let Some(expected) = &self.expect.outcome {
            if let Some(outcome) = expected.outcomes().iter().find(|o| !o.is_final()) {
                return Err((
                    line_of_key(text, "outcome"),
                    format!("expect.outcome: `{outcome}` is not an outcome"),
                ));
            }
            if let (ExpectedOutcome::PerIncident(list), Some(incidents)) =
                (expected, self.expect.incidents)
                && list.len() != incidents as usize
            {
                return Err((
                    line_of_key(text, "outcome"),
                    format!(
                        "expect.outcome: {} outcomes listed for {incidents} incidents (one per incident, in the order opened)",
                        list.len()
                    ),
                ));
            }
        }
        if let Some(speed) = self.speed
            && !(speed.is_finite() && speed > 0.0)
        {
            return Err((
                line_of_key(text, "speed"),
                format!(
                    "speed: must be a positive number of virtual seconds per real second, got {speed}"
                ),
            ));
        }
        let mut names: Vec<String> = Vec::new();
        for ns in &self.state.namespaces {
            if names.contains(&ns.name) {
                return Err((
                    None,
                    format!("state.namespaces: {} is listed twice", ns.name),
                ));
            }
            names.push(ns.name.clone());
        }
        Ok(())
    }

    /// Faults with their parameters resolved (checked in [`Scenario::parse`]).
    pub fn resolved_faults(&self) -> Vec<(Duration, Fault, Option<Target>)> {
        self.faults
            .iter()
            .filter_map(|f| {
                f.value
                    .resolve()
                    .ok()
                    .map(|(fault, target)| (f.value.at.0, fault, target))
            })
            .collect()
    }
}

/// The parser's message without its own location prefix (the error carries it).
fn first_line(message: &str) -> String {
    let mut m = message.lines().next().unwrap_or(message).trim();
    m = m.strip_prefix("error: ").unwrap_or(m);
    if m.starts_with("line ")
        && let Some((head, rest)) = m.split_once(": ")
        && head.contains("column")
    {
        m = rest;
    }
    m.to_owned()
}

/// Parses any YAML document into `T` (used for the simulator's RBAC file).
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| first_line(&e.to_string()))
}
