//! Deterministic root-cause rules. Every claim names the evidence it rests on; the LLM, when
//! enabled, never changes what these rules decide.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::{Value, json};

use opsmesh_proto::{
    ActionKind, RootCause, Target,
    alert::{Alert, EntityKind, FieldValue},
    diagnosis::{ActionProposal, Evidence, EvidenceSource},
    quantity::{format_bytes, parse_bytes},
    telemetry::ModelHealth,
};

use crate::{
    policy_fixes,
    telemetry::{Observed, TelemetryStore},
};

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
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            memory_headroom: 1.3,
            memory_step_mib: 64,
            max_memory_limit: "16Gi".into(),
            memory_factor_without_peak: 2.0,
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

fn model_rule(
    alert: &Alert,
    alert_ev: &str,
    namespace: &str,
    name: &str,
    store: &TelemetryStore,
    settings: &RuleSettings,
    log: &mut EvidenceLog,
) -> Option<Finding> {
    let target = isvc_target(namespace, name);
    let (latest, oldest) = match store.model(namespace, name) {
        Some(pair) => pair,
        None => return model_rule_from_alert(alert, alert_ev, &target, settings),
    };
    let ev = log.telemetry(&latest);
    let m = &latest.record;
    let oom = m.oom_killed > 0 || m.last_termination_reason.as_deref() == Some("OOMKilled");
    let waiting = m.waiting_reason.as_deref().unwrap_or("");
    if matches!(waiting, "ImagePullBackOff" | "ErrImagePull") {
        return Some(image_pull(&target, m, &[alert_ev, &ev]));
    }
    if oom {
        return Some(oom_finding(&target, m, settings, &[alert_ev, &ev]));
    }
    if waiting == "CrashLoopBackOff" {
        return Some(crash_loop(&target, m, &[alert_ev, &ev]));
    }
    let restarted = m.restarts > oldest.record.restarts;
    if m.ready && m.ready_replicas >= m.replicas && !restarted {
        return Some(none_finding(
            &target,
            format!(
                "{name} is Ready with {}/{} replicas and no restarts in the window",
                m.ready_replicas, m.replicas
            ),
            &[alert_ev, &ev],
        ));
    }
    None
}

/// Without telemetry, the alert's own fields may still name the failure (lower confidence).
fn model_rule_from_alert(
    alert: &Alert,
    alert_ev: &str,
    target: &str,
    settings: &RuleSettings,
) -> Option<Finding> {
    let reason = row_value(
        alert,
        &["reason", "waiting_reason", "last_termination_reason"],
    )?;
    let m = ModelHealth {
        waiting_reason: Some(reason.to_owned()),
        last_termination_reason: Some(reason.to_owned()),
        // A search that reports the limit lets the OOM rule raise from it.
        memory_limit: row_value(alert, &["memory_limit"]).map(str::to_owned),
        ..ModelHealth::default()
    };
    let mut finding = match reason {
        "ImagePullBackOff" | "ErrImagePull" => image_pull(target, &m, &[alert_ev]),
        "OOMKilled" => oom_finding(target, &m, settings, &[alert_ev]),
        "CrashLoopBackOff" => crash_loop(target, &m, &[alert_ev]),
        _ => return None,
    };
    finding.confidence *= 0.6;
    Some(finding)
}

/// Bytes rounded up to a multiple of `step_mib` MiB, in the largest exact unit (`640Mi`, `1Gi`).
fn round_up_mib(bytes: u64, step_mib: u64) -> String {
    let step = step_mib.max(1) << 20;
    format_bytes(bytes.div_ceil(step) * step)
}

fn oom_finding(target: &str, m: &ModelHealth, settings: &RuleSettings, ev: &[&str]) -> Finding {
    let limit = m.memory_limit.as_deref().and_then(|q| parse_bytes(q).ok());
    let ceiling = parse_bytes(&settings.max_memory_limit).unwrap_or(u64::MAX);
    let from_limit = |limit: u64| (limit as f64 * settings.memory_factor_without_peak) as u64;
    let (basis, wanted) = match (m.peak_working_set_bytes, limit) {
        // Killed at the limit means the demand is above it: a peak sampled at or below the
        // limit missed the spike, so the limit is the better basis.
        (Some(peak), Some(limit)) if (peak as f64 * settings.memory_headroom) as u64 <= limit => (
            format!(
                "peak working set {} × {} is not above the current limit: current limit × {}",
                round_up_mib(peak, 1),
                settings.memory_headroom,
                settings.memory_factor_without_peak
            ),
            from_limit(limit),
        ),
        (Some(peak), _) => (
            format!(
                "peak working set {} × {}",
                round_up_mib(peak, 1),
                settings.memory_headroom
            ),
            (peak as f64 * settings.memory_headroom) as u64,
        ),
        (None, Some(limit)) => (
            format!(
                "no peak observed: current limit × {}",
                settings.memory_factor_without_peak
            ),
            from_limit(limit),
        ),
        // The remediator checks the limit it observes before patching and refuses a lower one.
        (None, None) => ("no limit or peak known: 1Gi".into(), 1 << 30),
    };
    let capped = wanted.min(ceiling);
    let new_limit = round_up_mib(capped, settings.memory_step_mib);
    if let Some(limit) = limit
        && parse_bytes(&new_limit).ok().is_none_or(|new| new <= limit)
    {
        return oom_at_ceiling(target, m, settings, ev);
    }
    let mut explanation = format!(
        "{target} pods were OOMKilled ({} termination(s), {} restart(s)) under a {} limit ({}). \
         New limit {new_limit} = {basis}, rounded up to {} Mi.",
        m.oom_killed,
        m.restarts,
        m.memory_limit.as_deref().unwrap_or("unknown"),
        ev.join(", "),
        settings.memory_step_mib
    );
    let mut actions = vec![proposal(
        ActionKind::PatchMemoryLimit,
        target,
        json!({"memory_limit": new_limit, "previous_memory_limit": m.memory_limit}),
        ev,
        format!("{basis}, rounded up"),
    )];
    if capped < wanted {
        explanation.push_str(&format!(
            " Capped at {}: below the demand, so humans are told too.",
            settings.max_memory_limit
        ));
        actions.push(proposal(
            ActionKind::Escalate,
            target,
            json!({}),
            ev,
            "the safe limit is below the demand".into(),
        ));
    }
    Finding {
        root_cause: RootCause::OomKilled,
        confidence: if m.peak_working_set_bytes.is_some() {
            0.95
        } else {
            0.8
        },
        target: Some(target.to_owned()),
        summary: format!("{target} is OOMKilled; raise its memory limit to {new_limit}"),
        explanation,
        actions,
        developer_fix: None,
        evidence: Vec::new(),
        query: "OOMKilled memory limit raise working set".into(),
    }
}

/// The limit cannot be raised: it is already at or above what the rules may set (the ceiling,
/// or a factor that does not raise it). Patching would lower it; humans decide.
fn oom_at_ceiling(target: &str, m: &ModelHealth, settings: &RuleSettings, ev: &[&str]) -> Finding {
    let limit = m.memory_limit.as_deref().unwrap_or("unknown");
    Finding {
        root_cause: RootCause::OomKilled,
        confidence: 0.8,
        target: Some(target.to_owned()),
        summary: format!(
            "{target} is OOMKilled at its {limit} limit, which the rules cannot raise (ceiling {}); escalate",
            settings.max_memory_limit
        ),
        explanation: format!(
            "{target} pods were OOMKilled ({} termination(s), {} restart(s)) under a {limit} limit ({}). \
             The limit is already at or above the {} ceiling the rules may set, so no patch would raise it; \
             memory demand above the ceiling needs a human.",
            m.oom_killed,
            m.restarts,
            ev.join(", "),
            settings.max_memory_limit
        ),
        actions: vec![proposal(
            ActionKind::Escalate,
            target,
            json!({}),
            ev,
            "the memory limit is at or above the ceiling; no higher limit may be set".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: "escalate memory demand above the ceiling OOMKilled".into(),
    }
}

fn crash_loop(target: &str, m: &ModelHealth, ev: &[&str]) -> Finding {
    Finding {
        root_cause: RootCause::CrashLoop,
        confidence: 0.8,
        target: Some(target.to_owned()),
        summary: format!("{target} is in CrashLoopBackOff; restart it once"),
        explanation: format!(
            "Containers exit on start (CrashLoopBackOff, {} restarts; {}), not for memory. A single \
             rollout restart clears transient causes; if the loop persists after verification the \
             incident is escalated.",
            m.restarts,
            ev.join(", ")
        ),
        actions: vec![proposal(
            ActionKind::RestartInferenceService,
            target,
            json!({}),
            ev,
            "restart once".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: "CrashLoopBackOff restart crash loop".into(),
    }
}

fn image_pull(target: &str, m: &ModelHealth, ev: &[&str]) -> Finding {
    let (actions, summary) = match &m.last_known_good_image {
        Some(good) => (
            vec![proposal(
                ActionKind::RollbackImage,
                target,
                json!({"image": good, "failing_image": m.image}),
                ev,
                format!("{good} is the last image known to run"),
            )],
            format!("{target} cannot pull its image; roll back to {good}"),
        ),
        None => (
            vec![proposal(
                ActionKind::Escalate,
                target,
                json!({}),
                ev,
                "no last known good image".into(),
            )],
            format!("{target} cannot pull its image and no good image is known; escalate"),
        ),
    };
    Finding {
        root_cause: RootCause::ImagePullError,
        confidence: 0.9,
        target: Some(target.to_owned()),
        summary,
        explanation: format!(
            "The predictor waits in {} for image {} ({}). A restart cannot help.",
            m.waiting_reason.as_deref().unwrap_or("ImagePullBackOff"),
            m.image.as_deref().unwrap_or("unknown"),
            ev.join(", ")
        ),
        actions,
        developer_fix: None,
        evidence: Vec::new(),
        query: "ImagePullBackOff image pull rollback previous image".into(),
    }
}

fn policy_rule(
    alert: &Alert,
    alert_ev: &str,
    namespace: &str,
    policy: &str,
    store: &TelemetryStore,
    log: &mut EvidenceLog,
) -> Option<Finding> {
    let reports = store.failing_policies(namespace, Some(policy));
    let mut ev: Vec<String> = vec![alert_ev.to_owned()];
    ev.extend(reports.iter().map(|r| log.telemetry(r)));
    let resource = row_value(alert, &["resource", "resource_name", "object"])
        .map(str::to_owned)
        .or_else(|| reports.first().map(|r| r.record.resource.clone()));
    let target = resource_target(namespace, resource.as_deref());
    let message = reports.first().map(|r| r.record.message.clone());
    let fix = policy_fixes::fix_for(policy, message.as_deref());
    let ev_refs: Vec<&str> = ev.iter().map(String::as_str).collect();
    Some(Finding {
        root_cause: RootCause::PolicyViolation,
        confidence: if reports.is_empty() { 0.75 } else { 0.95 },
        target: Some(target.clone()),
        summary: format!("Kyverno policy {policy} denies {target}: {}", fix.title),
        explanation: format!(
            "{} ({}). Nothing is changed in the cluster: the fix is for the developer.",
            fix.explanation,
            ev.join(", ")
        ),
        actions: vec![proposal(
            ActionKind::SuggestPolicyFix,
            &target,
            json!({"policy": policy}),
            &ev_refs,
            "the workload must change, not the cluster".into(),
        )],
        developer_fix: Some(fix.yaml),
        evidence: Vec::new(),
        query: format!("Kyverno policy {policy} fix"),
    })
}

fn isvc_target(namespace: &str, name: &str) -> String {
    Target::InferenceService {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
    .to_string()
}

/// `Pod/name`, `kind/ns/name` or a bare name (an InferenceService in the namespace).
fn resource_target(namespace: &str, resource: Option<&str>) -> String {
    match resource {
        None => Target::Namespace(namespace.to_owned()).to_string(),
        Some(r) => match r.split('/').collect::<Vec<_>>().as_slice() {
            [name] => isvc_target(namespace, name),
            [kind, name] => Target::namespaced(kind, namespace, name).to_string(),
            _ => r.to_lowercase(),
        },
    }
}

fn gitops_rule(
    alert_ev: &str,
    namespace: &str,
    app: &str,
    store: &TelemetryStore,
    log: &mut EvidenceLog,
) -> Option<Finding> {
    let target = Target::Application {
        namespace: None,
        name: app.to_owned(),
    }
    .to_string();
    let observed = store.application(app)?;
    let ev = log.telemetry(&observed);
    let g = &observed.record;
    if g.sync == "Synced" {
        return Some(none_finding(
            &target,
            format!("{app} is Synced and {}", g.health),
            &[alert_ev, &ev],
        ));
    }
    Some(Finding {
        root_cause: RootCause::GitopsDrift,
        confidence: 0.9,
        target: Some(target.clone()),
        summary: format!("ArgoCD application {app} is {}; sync it to git", g.sync),
        explanation: format!(
            "{app} (namespace {namespace}) reports sync {} and health {} at revision {} ({alert_ev}, {ev}): \
             the live state differs from git. A sync restores the declared state.",
            g.sync,
            g.health,
            g.revision.as_deref().unwrap_or("unknown")
        ),
        actions: vec![proposal(
            ActionKind::ArgocdSync,
            &target,
            json!({}),
            &[alert_ev, &ev],
            "git is the source of truth".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: "ArgoCD OutOfSync drift sync".into(),
    })
}

/// Hours left in the billing window: the calendar month, UTC.
fn hours_left_in_month(now: DateTime<Utc>) -> f64 {
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (end - now).num_seconds().max(0) as f64 / 3600.0
}

fn cost_rule(
    alert: &Alert,
    alert_ev: &str,
    namespace: &str,
    store: &TelemetryStore,
    log: &mut EvidenceLog,
    now: DateTime<Utc>,
) -> Option<Finding> {
    let number = |names: &[&str]| row_value(alert, names).and_then(|v| v.parse::<f64>().ok());
    let (total, pods) = store.costs(namespace);
    let mut ev: Vec<String> = vec![alert_ev.to_owned()];
    let total_ev = total.as_ref().map(|t| log.telemetry(t));
    ev.extend(total_ev.clone());
    let hourly = total
        .as_ref()
        .map(|t| t.record.hourly_cost_usd)
        .or_else(|| number(&["hourly_cost", "hourly_cost_usd", "cost"]))?;
    let telemetry_budget = total.as_ref().and_then(|t| t.record.hourly_budget_usd);
    let budget =
        telemetry_budget.or_else(|| number(&["budget", "hourly_budget_usd", "hourly_budget"]))?;
    // Alert fields are whatever the alert's sender wrote: an overrun known only from them may
    // advise a budget owner, never scale or cap.
    let from_telemetry = total.is_some() && telemetry_budget.is_some();
    let target_ns = Target::Namespace(namespace.to_owned()).to_string();
    if hourly <= budget {
        let refs: Vec<&str> = ev.iter().map(String::as_str).collect();
        return Some(none_finding(
            &target_ns,
            format!("{namespace} costs ${hourly:.2}/h, within its ${budget:.2}/h budget"),
            &refs,
        ));
    }
    // Workloads by cost share, with the replicas they had at the start of the window.
    let models = store.models_in(namespace);
    let mut workloads: Vec<(String, f64, u32, u32)> = models
        .iter()
        .map(|(latest, oldest)| {
            let name = latest.record.name.clone();
            let prefix = format!("{name}-predictor");
            let cost: f64 = pods
                .iter()
                .filter(|p| {
                    p.record
                        .pod
                        .as_deref()
                        .is_some_and(|pod| pod.starts_with(&prefix))
                })
                .map(|p| p.record.hourly_cost_usd)
                .sum();
            (
                name,
                cost,
                latest.record.replicas,
                // The declared normal size, else the smallest size seen in the window.
                latest
                    .record
                    .expected_replicas
                    .unwrap_or(oldest.record.replicas)
                    .min(latest.record.replicas),
            )
        })
        .collect();
    workloads.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (latest, _) in &models {
        ev.push(log.telemetry(latest));
    }
    let overage = (hourly - budget) / budget * 100.0;
    let shares: Vec<String> = workloads
        .iter()
        .map(|(n, c, r, b)| {
            format!(
                "{n} ${c:.2}/h ({:.0}%, {r} replicas, {b} at the start of the window)",
                c / hourly * 100.0
            )
        })
        .collect();
    let advise_only = if !from_telemetry {
        Some((
            "the cost and budget come from the alert's fields, not from OpenCost telemetry, so nothing is scaled or capped on them",
            "cost figures not from telemetry",
        ))
    } else if workloads.is_empty() {
        Some((
            "no per-workload telemetry is available to size a quota or a scale-down safely",
            "no workload telemetry",
        ))
    } else {
        None
    };
    if let Some((why, rationale)) = advise_only {
        let refs: Vec<&str> = ev.iter().map(String::as_str).collect();
        return Some(Finding {
            root_cause: RootCause::CostOverrun,
            confidence: 0.6,
            target: Some(target_ns.clone()),
            summary: format!(
                "{namespace} costs ${hourly:.2}/h against a ${budget:.2}/h budget ({overage:.0}% over)"
            ),
            explanation: format!(
                "{namespace} is {overage:.0}% over budget ({}), but {why}; a budget owner decides.",
                ev.join(", ")
            ),
            actions: vec![proposal(
                ActionKind::Escalate,
                &target_ns,
                json!({}),
                &refs,
                rationale.into(),
            )],
            developer_fix: None,
            evidence: Vec::new(),
            query: "cost over budget escalate budget owner".into(),
        });
    }
    let hours = hours_left_in_month(now);
    let mut actions = Vec::new();
    let mut released = 0.0;
    let refs: Vec<&str> = ev.iter().map(String::as_str).collect();
    if let Some((name, cost, replicas, baseline)) = workloads.iter().find(|w| w.2 > w.3 && w.3 > 0)
    {
        released = cost * f64::from(replicas - baseline) / f64::from(*replicas) / hourly;
        actions.push(proposal(
            ActionKind::ScaleInferenceService,
            &isvc_target(namespace, name),
            json!({"replicas": baseline, "previous_replicas": replicas}),
            &refs,
            format!("back to the {baseline} replicas it ran before the spike"),
        ));
    }
    let pods_after: u32 = workloads
        .iter()
        .map(|w| if w.2 > w.3 && w.3 > 0 { w.3 } else { w.2 })
        .sum();
    // One pod of room above the remediated size, so rolling updates can still surge.
    let quota_pods = pods_after + 1;
    let saving = hourly * released * hours;
    actions.push(proposal(
        ActionKind::ApplyResourceQuota,
        &target_ns,
        json!({"pods": quota_pods, "projected_saving_usd": (saving * 100.0).round() / 100.0}),
        &refs,
        "cap further scale-out at the post-remediation size".into(),
    ));
    let yaml = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: opsmesh-cost-guard\n  namespace: {namespace}\nspec:\n  hard:\n    pods: \"{quota_pods}\"\n---\napiVersion: v1\nkind: LimitRange\nmetadata:\n  name: opsmesh-default-limits\n  namespace: {namespace}\nspec:\n  limits:\n    - type: Container\n      default:\n        memory: 1Gi\n      defaultRequest:\n        memory: 512Mi\n"
    );
    Some(Finding {
        root_cause: RootCause::CostOverrun,
        confidence: 0.9,
        target: Some(target_ns.clone()),
        summary: format!(
            "{namespace} costs ${hourly:.2}/h against a ${budget:.2}/h budget ({overage:.0}% over)"
        ),
        explanation: format!(
            "{namespace} is {overage:.0}% over budget (${hourly:.2}/h vs ${budget:.2}/h; {}). By share: {}. \
             Projected saving Δ = k·r·t = {hourly:.2} × {released:.3} × {hours:.1} h = ${saving:.2} for the rest of the billing month.",
            ev.join(", "),
            if shares.is_empty() {
                "no per-workload telemetry".into()
            } else {
                shares.join("; ")
            }
        ),
        actions,
        developer_fix: Some(yaml),
        evidence: Vec::new(),
        query: "cost over budget ResourceQuota scale down".into(),
    })
}

#[cfg(test)]
mod tests;
