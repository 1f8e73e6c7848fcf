//! Deterministic root-cause rules. Every claim names the evidence it rests on; the LLM, when
//! enabled, never changes what these rules decide. One module per rule family: [`model`]
//! (InferenceService), [`reference`] (its missing Secrets and ConfigMaps), [`policy`]
//! (Kyverno), [`gitops`] (ArgoCD), [`cost`] (budgets).

mod autoscale;
mod canary;
mod cost;
mod gitops;
mod gpu;
mod model;
mod model_load;
mod policy;
mod reference;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use opsmesh_proto::{
    ActionKind, RootCause, Target,
    alert::{Alert, EntityKind, FieldValue},
    diagnosis::{ActionProposal, Evidence, EvidenceSource},
};

use crate::telemetry::{Observed, TelemetryStore};
use cost::cost_rule;
use gitops::gitops_rule;
use model::model_rule;
use policy::policy_rule;

/// Tunables of the rules (`[diagnoser.rules]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSettings {
    /// New memory limit = observed peak × this, rounded up to `memory_step_mib`.
    pub memory_headroom: f64,
    pub memory_step_mib: u64,
    /// Recommendations never exceed this (the remediator enforces its own ceiling too).
    pub max_memory_limit: String,
    /// Without an observed peak, the limit is multiplied by this instead.
    pub memory_factor_without_peak: f64,
    /// A canary regresses when its error rate is at least this many times the stable
    /// revision's …
    pub canary_error_ratio: f64,
    /// … and at least this much above it (a fraction of requests).
    pub canary_min_error_delta: f64,
    /// An autoscaler at its bound is saturated when the latency in the alert's rows rose at
    /// least this many times from the first row to the last.
    pub latency_rise_ratio: f64,
    /// A saturated autoscaler's maxReplicas is multiplied by this (rounded up) …
    pub max_replicas_factor: f64,
    /// … but never set above this (the remediator enforces its own ceiling too).
    pub max_replicas_limit: u32,
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            memory_headroom: 1.3,
            memory_step_mib: 64,
            max_memory_limit: "16Gi".into(),
            memory_factor_without_peak: 2.0,
            canary_error_ratio: 2.0,
            canary_min_error_delta: 0.01,
            latency_rise_ratio: 1.2,
            max_replicas_factor: 2.0,
            max_replicas_limit: 20,
        }
    }
}

/// The outcome of the rules for one incident.
#[derive(Debug, Clone)]
pub struct Finding {
    pub root_cause: RootCause,
    pub confidence: f64,
    pub target: Option<String>,
    pub summary: String,
    pub explanation: String,
    pub actions: Vec<ActionProposal>,
    pub developer_fix: Option<String>,
    pub evidence: Vec<Evidence>,
    /// Words for runbook retrieval.
    pub query: String,
}

/// Evidence gathered so far, numbered `ev1`, `ev2`, … in the order it was used.
#[derive(Default)]
pub struct EvidenceLog {
    items: Vec<Evidence>,
}

impl EvidenceLog {
    pub fn add(
        &mut self,
        source: EvidenceSource,
        query: String,
        rows: u64,
        values: BTreeMap<String, Value>,
    ) -> String {
        let id = format!("ev{}", self.items.len() + 1);
        self.items.push(Evidence {
            id: id.clone(),
            source,
            query,
            earliest: None,
            latest: None,
            row_count: rows,
            values,
            error: None,
        });
        id
    }

    pub fn push(&mut self, mut evidence: Evidence) -> String {
        let id = format!("ev{}", self.items.len() + 1);
        evidence.id = id.clone();
        self.items.push(evidence);
        id
    }

    fn telemetry<T: serde::Serialize>(&mut self, observed: &Observed<T>) -> String {
        let values = match serde_json::to_value(&observed.record) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        self.add(
            EvidenceSource::Telemetry,
            format!(
                "opsmesh.telemetry.v1 {} observed_at={}",
                observed.resource,
                observed.observed_at.to_rfc3339()
            ),
            1,
            values,
        )
    }

    pub fn into_items(self) -> Vec<Evidence> {
        self.items
    }
}

fn row_value<'a>(alert: &'a Alert, names: &[&str]) -> Option<&'a str> {
    let row = alert.rows.first()?;
    names
        .iter()
        .find_map(|n| row.get(*n).and_then(FieldValue::first))
}

fn proposal(
    kind: ActionKind,
    target: &str,
    params: Value,
    evidence: &[&str],
    rationale: String,
) -> ActionProposal {
    ActionProposal {
        kind,
        target: target.to_owned(),
        params: match params {
            Value::Object(map) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        },
        evidence_ids: evidence.iter().map(|s| s.to_string()).collect(),
        rationale,
    }
}

/// Classifies the incident from the alert (whose evidence is `alert_evidence`), recent
/// telemetry and any extra evidence already in `log` (Splunk).
pub fn diagnose(
    alert: &Alert,
    alert_evidence: &str,
    store: &TelemetryStore,
    settings: &RuleSettings,
    mut log: EvidenceLog,
    now: DateTime<Utc>,
) -> Finding {
    let entity = &alert.entity;
    let namespace = entity.namespace.clone().unwrap_or_default();
    let mut finding = if entity.is_unusable() {
        unusable_entity(alert, alert_evidence)
    } else if let Some(policy) = entity.policy.clone() {
        policy_rule(alert, alert_evidence, &namespace, &policy, store, &mut log)
    } else if let Some(app) = entity.application.clone() {
        gitops_rule(alert_evidence, &namespace, &app, store, &mut log)
    } else if entity.kind == Some(EntityKind::Inferenceservice) {
        let name = entity.name.clone().unwrap_or_default();
        model_rule(
            alert,
            alert_evidence,
            &namespace,
            &name,
            store,
            settings,
            &mut log,
        )
    } else if !namespace.is_empty() {
        cost_rule(alert, alert_evidence, &namespace, store, &mut log, now)
    } else {
        None
    }
    .unwrap_or_else(|| unknown(alert, alert_evidence));
    finding.evidence = log.into_items();
    finding
}

/// An alert whose entity fields are not usable names (the receiver kept them quoted): no
/// rule may build a target from them, so it is escalated to humans, naming what it sent.
fn unusable_entity(alert: &Alert, alert_evidence: &str) -> Option<Finding> {
    let sent = alert.entity.unusable_summary();
    Some(Finding {
        root_cause: RootCause::Unknown,
        confidence: 0.0,
        target: None,
        summary: format!(
            "{}: the alert names no usable resource ({sent})",
            alert.name
        ),
        explanation: format!(
            "The alert ({alert_evidence}) names its resource with values that are not valid \
             Kubernetes names: {sent}. Nothing is acted on from them; escalating so a human \
             finds the resource and checks the sender."
        ),
        actions: vec![proposal(
            ActionKind::Escalate,
            "unknown",
            json!({}),
            &[alert_evidence],
            "the alert's resource names are unusable; humans decide".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: format!("{} escalate unknown", alert.name),
    })
}

fn unknown(alert: &Alert, alert_evidence: &str) -> Finding {
    let target = alert.entity.target().unwrap_or_else(|| "unknown".into());
    Finding {
        root_cause: RootCause::Unknown,
        confidence: 0.0,
        target: alert.entity.target(),
        summary: format!("{}: no rule matched the evidence", alert.name),
        explanation: format!(
            "The alert ({alert_evidence}) names no resource whose telemetry explains it; \
             escalating with the evidence gathered."
        ),
        actions: vec![proposal(
            ActionKind::Escalate,
            &target,
            json!({}),
            &[alert_evidence],
            "no rule identified a root cause; humans decide".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: format!("{} escalate unknown", alert.name),
    }
}

fn none_finding(target: &str, why: String, evidence: &[&str]) -> Finding {
    Finding {
        root_cause: RootCause::None,
        confidence: 0.8,
        target: Some(target.to_owned()),
        summary: format!("{target} is healthy; the alert is not borne out"),
        explanation: format!("{why} ({}). No action.", evidence.join(", ")),
        actions: Vec::new(),
        developer_fix: None,
        evidence: Vec::new(),
        query: "healthy no action".into(),
    }
}

fn isvc_target(namespace: &str, name: &str) -> String {
    Target::InferenceService {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
    .to_string()
}

#[cfg(test)]
mod tests;
