//! Scenario files (the contract in `scenarios/README.md`): initial cluster state, injected
//! faults, alerts and expectations. Unknown keys and missing required keys are errors naming
//! the key and its line; a bad file never panics.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::{Deserialize, Deserializer, de};
use serde_json::Value;
use serde_saphyr::Spanned;

use opsmesh_proto::{
    ActionKind, IncidentState, RootCause, Target, alert::AlertStatus, incident::IncidentStatus,
    quantity::parse_bytes, remediation::ActionMode,
};

use crate::duration::parse_duration;

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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    #[serde(default)]
    pub namespaces: Vec<NamespaceSpec>,
    #[serde(default)]
    pub inference_services: Vec<InferenceServiceSpec>,
    #[serde(default)]
    pub argocd_apps: Vec<ArgoAppSpec>,
    #[serde(default)]
    pub policies: Vec<PolicyDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: String,
    #[serde(default)]
    pub hourly_budget_usd: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceServiceSpec {
    pub namespace: String,
    pub name: String,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub memory_limit: Option<Bytes>,
    #[serde(default)]
    pub memory_request: Option<Bytes>,
    #[serde(default)]
    pub gpu: u32,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub previous_image: Option<String>,
    #[serde(default)]
    pub hourly_cost_usd: Option<f64>,
    #[serde(default)]
    pub argocd_app: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoAppSpec {
    pub name: String,
    pub namespace: String,
    #[serde(default = "synced")]
    pub sync: SyncStatus,
    #[serde(default = "healthy")]
    pub health: HealthStatus,
}

fn synced() -> SyncStatus {
    SyncStatus::Synced
}

fn healthy() -> HealthStatus {
    HealthStatus::Healthy
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SyncStatus {
    Synced,
    OutOfSync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Progressing,
    Missing,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Degraded => "Degraded",
            Self::Progressing => "Progressing",
            Self::Missing => "Missing",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    pub name: String,
    #[serde(default = "enforce")]
    pub action: PolicyAction,
}

fn enforce() -> PolicyAction {
    PolicyAction::Enforce
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKindName {
    OomLoop,
    CrashLoop,
    ImagePullError,
    PolicyDenial,
    CostSpike,
    GitopsDrift,
    ApiOutage,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default)]
    pub at: Dur,
    pub kind: FaultKindName,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

/// A fault with its parameters checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    OomLoop {
        memory_demand: u64,
    },
    CrashLoop {
        persistent: bool,
        exit_code: i32,
    },
    ImagePullError,
    PolicyDenial {
        policy: String,
        resource: Option<String>,
        reason: String,
    },
    CostSpike {
        replicas: u32,
    },
    GitopsDrift,
    /// The APIs answer 503 for `duration` of virtual time.
    ApiOutage {
        duration: Duration,
        apis: Vec<Api>,
        /// Begin at the first accepted write to the Kubernetes API at or after `at` (the
        /// moment a fix lands), not at `at`: how long a remediation takes in virtual time
        /// depends on wall-clock latency, so a fixed time could not aim at verification.
        after_write: bool,
    },
    None,
}

/// An API the simulator serves, as `api_outage`'s `apis` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Kubernetes,
    Argocd,
    Opencost,
}

impl Api {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "kubernetes" => Ok(Self::Kubernetes),
            "argocd" => Ok(Self::Argocd),
            "opencost" => Ok(Self::Opencost),
            other => Err(format!(
                "params.apis: unknown API {other:?}; expected kubernetes, argocd or opencost"
            )),
        }
    }
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Self::OomLoop { .. } => "oom_loop",
            Self::CrashLoop { .. } => "crash_loop",
            Self::ImagePullError => "image_pull_error",
            Self::PolicyDenial { .. } => "policy_denial",
            Self::CostSpike { .. } => "cost_spike",
            Self::GitopsDrift => "gitops_drift",
            Self::ApiOutage { .. } => "api_outage",
            Self::None => "none",
        }
    }
}

/// What a fault is aimed at: a wire target, which scenarios may also write `isvc/<ns>/<name>`.
/// Faults act on InferenceServices, applications and namespaces only.
fn fault_target(text: &str) -> Result<Target, String> {
    let target = match text.split_once('/') {
        Some(("isvc", rest)) => ["inferenceservice", rest].join("/").parse(),
        _ => text.parse(),
    };
    match target {
        Ok(
            t @ (Target::InferenceService { .. }
            | Target::Application { .. }
            | Target::Namespace(_)),
        ) => Ok(t),
        Ok(_) => Err(format!(
            "target {text:?} must be inferenceservice/<namespace>/<name>, application/<name> or namespace/<name>"
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl FaultSpec {
    /// Checks the parameters of the kind and the target.
    pub fn resolve(&self) -> Result<(Fault, Option<Target>), String> {
        let allowed: &[&str] = match self.kind {
            FaultKindName::OomLoop => &["memory_demand"],
            FaultKindName::CrashLoop => &["persistent", "exit_code"],
            FaultKindName::PolicyDenial => &["policy", "resource", "reason"],
            FaultKindName::CostSpike => &["replicas"],
            FaultKindName::ApiOutage => &["duration", "apis", "after_write"],
            _ => &[],
        };
        if let Some(unknown) = self.params.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "params: unknown parameter `{unknown}` for this fault kind; expected {}",
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            ));
        }
        let text = |k: &str| -> Option<String> {
            self.params.get(k).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let fault = match self.kind {
            FaultKindName::OomLoop => Fault::OomLoop {
                memory_demand: parse_bytes(
                    &text("memory_demand")
                        .ok_or("params.memory_demand is required for oom_loop")?,
                )
                .map_err(|e| format!("params.memory_demand: {e}"))?,
            },
            FaultKindName::CrashLoop => Fault::CrashLoop {
                persistent: match self.params.get("persistent") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(format!(
                            "params.persistent must be true or false, got {other}"
                        ));
                    }
                },
                exit_code: match self.params.get("exit_code") {
                    None => 1,
                    Some(v) => v
                        .as_i64()
                        .and_then(|c| i32::try_from(c).ok())
                        .ok_or_else(|| format!("params.exit_code must be an integer, got {v}"))?,
                },
            },
            FaultKindName::ImagePullError => Fault::ImagePullError,
            FaultKindName::PolicyDenial => Fault::PolicyDenial {
                policy: text("policy").unwrap_or_else(|| "disallow-root-containers".into()),
                resource: text("resource"),
                reason: text("reason")
                    .unwrap_or_else(|| "validation error: the resource violates the policy".into()),
            },
            FaultKindName::CostSpike => Fault::CostSpike {
                replicas: self
                    .params
                    .get("replicas")
                    .and_then(Value::as_u64)
                    .and_then(|r| u32::try_from(r).ok())
                    .ok_or("params.replicas (a non-negative integer) is required for cost_spike")?,
            },
            FaultKindName::GitopsDrift => Fault::GitopsDrift,
            FaultKindName::ApiOutage => Fault::ApiOutage {
                duration: parse_duration(
                    &text("duration").ok_or("params.duration is required for api_outage")?,
                )
                .map_err(|e| format!("params.duration: {e}"))?,
                apis: match self.params.get("apis") {
                    None => vec![Api::Kubernetes],
                    Some(Value::Array(names)) if !names.is_empty() => names
                        .iter()
                        .map(|n| {
                            n.as_str()
                                .ok_or_else(|| format!("params.apis: {n} is not an API name"))
                                .and_then(Api::parse)
                        })
                        .collect::<Result<_, _>>()?,
                    Some(other) => {
                        return Err(format!(
                            "params.apis must be a non-empty list of kubernetes, argocd, opencost; got {other}"
                        ));
                    }
                },
                after_write: match self.params.get("after_write") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(format!(
                            "params.after_write must be true or false, got {other}"
                        ));
                    }
                },
            },
            FaultKindName::None => Fault::None,
        };
        let target = match (&fault, self.target.as_deref()) {
            (Fault::None | Fault::ApiOutage { .. }, None) => None,
            (Fault::ApiOutage { .. }, Some(_)) => {
                return Err(
                    "api_outage takes no target: it affects whole APIs (params.apis)".into(),
                );
            }
            (_, Some(t)) => Some(fault_target(t)?),
            (_, None) => return Err("target is required for this fault kind".into()),
        };
        match (&fault, &target) {
            (Fault::GitopsDrift, Some(Target::Application { .. }))
            | (Fault::None | Fault::ApiOutage { .. }, _) => {}
            (Fault::GitopsDrift, _) => {
                return Err("gitops_drift needs an application/<name> target".into());
            }
            (_, Some(Target::InferenceService { .. })) => {}
            (f, _) => {
                return Err(format!(
                    "{} needs an inferenceservice/<namespace>/<name> target",
                    f.name()
                ));
            }
        }
        Ok((fault, target))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    SplunkAlertAction,
    SplunkWebhook,
    Alertmanager,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    #[serde(default)]
    pub at: Dur,
    pub via: Via,
    pub search_name: String,
    /// `resolved`: the sender says the condition ended (Alertmanager only).
    #[serde(default = "firing")]
    pub status: AlertStatus,
    #[serde(default = "one")]
    pub repeat: u32,
    #[serde(default)]
    pub every: Option<Dur>,
    #[serde(default)]
    pub rows: Vec<BTreeMap<String, Value>>,
}

fn firing() -> AlertStatus {
    AlertStatus::Firing
}

impl AlertSpec {
    /// Rows with every value as Splunk sends it: a string (or a list of strings).
    pub fn string_rows(&self) -> Vec<BTreeMap<String, Value>> {
        self.rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(_) | Value::Array(_) => v.clone(),
                            Value::Null => Value::String(String::new()),
                            other => Value::String(other.to_string()),
                        };
                        (k.clone(), v)
                    })
                    .collect()
            })
            .collect()
    }
}

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
        if let Some(outcome) = self.expect.outcome
            && !outcome.is_final()
        {
            return Err((
                line_of_key(text, "outcome"),
                format!("expect.outcome: `{outcome}` is not an outcome"),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALERT: &str =
        "alerts:\n  - at: 1m\n    via: alertmanager\n    search_name: s\n    rows: [{a: b}]\n";

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(text, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn an_alert_fires_unless_it_says_resolved() {
        let s = parse(&format!("name: x\n{ALERT}expect: {{}}\n")).unwrap();
        assert_eq!(s.alerts[0].value.status, AlertStatus::Firing);
        let s = parse(&format!(
            "name: x\n{ALERT}  - {{at: 2m, via: alertmanager, status: resolved, search_name: s, rows: [{{a: b}}]}}\nexpect: {{}}\n"
        ))
        .unwrap();
        assert_eq!(s.alerts[1].value.status, AlertStatus::Resolved);
        let e = parse(&format!("name: x\n{ALERT}    status: over\nexpect: {{}}\n")).unwrap_err();
        assert!(e.contains("t.yaml:7") && e.contains("over"), "{e}");
    }

    #[test]
    fn splunk_alerts_cannot_be_resolved() {
        for via in ["splunk_alert_action", "splunk_webhook"] {
            let e = parse(&format!(
                "name: x\nalerts:\n  - {{at: 1m, via: alertmanager, search_name: s, rows: [{{a: b}}]}}\n  - at: 2m\n    via: {via}\n    status: resolved\n    search_name: s\n    rows: [{{a: b}}]\nexpect: {{}}\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("t.yaml:4") && e.contains("alerts[1].status"),
                "{e}"
            );
        }
    }

    #[test]
    fn cleared_is_an_outcome_alongside_the_remediator_states() {
        let s = parse("name: x\nexpect:\n  outcome: cleared\n").unwrap();
        assert_eq!(s.expect.outcome, Some(Outcome::Cleared));
        assert_eq!(Outcome::Cleared.to_string(), "cleared");
        let s = parse("name: x\nexpect:\n  outcome: awaiting_approval\n").unwrap();
        assert_eq!(
            s.expect.outcome,
            Some(Outcome::State(IncidentState::AwaitingApproval))
        );
        assert_eq!(
            serde_json::to_value(s.expect.outcome).unwrap(),
            serde_json::json!("awaiting_approval")
        );
        // A state the remediator passes through is not an outcome; a word it never uses is
        // not even a state.
        let e = parse("name: x\nexpect:\n  outcome: verifying\n").unwrap_err();
        assert!(
            e.contains("t.yaml:3") && e.contains("expect.outcome"),
            "{e}"
        );
        let e = parse("name: x\nexpect:\n  outcome: vanished\n").unwrap_err();
        assert!(
            e.contains("t.yaml:3") && e.contains("vanished") && e.contains("cleared"),
            "{e}"
        );
    }

    #[test]
    fn speed_is_optional_and_positive() {
        assert_eq!(parse("name: x\nexpect: {}\n").unwrap().speed, None);
        assert_eq!(
            parse("name: x\nspeed: 5\nexpect: {}\n").unwrap().speed,
            Some(5.0)
        );
        for bad in ["0", "-2", ".nan"] {
            let e = parse(&format!("name: x\nexpect: {{}}\nspeed: {bad}\n")).unwrap_err();
            assert!(e.contains("t.yaml:3") && e.contains("speed"), "{bad}: {e}");
        }
        let e = parse("name: x\nspeed: fast\nexpect: {}\n").unwrap_err();
        assert!(e.contains("t.yaml:2"), "{e}");
    }
}
