//! Planning: which of a diagnosis' proposals may run, and how. A proposal becomes a planned
//! action only when the cited runbook section (re-loaded and hash-checked here) lists its
//! kind and target kind, its parameters are within the runbook's bounds, it cites evidence
//! the diagnosis carries, its target is a valid name, its machine-checked guards hold as far as
//! the diagnosis can tell ([`guards::check_plan`]), and the policy allows it. Anything else is a
//! refusal with its reason.

use chrono::{DateTime, Utc};
use serde_json::Value;

use opsmesh_proto::{
    ActionKind, RootCause, Target,
    diagnosis::{ActionProposal, Diagnosis, EvidenceSource},
    quantity::{json_quantity, parse_bytes},
    remediation::{ActionMode, ActionRecord},
};
use opsmesh_runbooks::{ActionSpec, Library, SectionSpec};

use crate::{
    config::PolicyConfig,
    guards::{self, Checked},
    ledger::is_mutating,
    policy::{self, History},
};

/// A refusal: a stable code (metrics label) and the reason in words (ledger).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
    pub action: Option<ActionRecord>,
}

/// One action that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    pub record: ActionRecord,
    /// The checks that passed, for the ledger.
    pub reason: String,
    pub projected_effect: String,
    pub projected_saving_usd: Option<f64>,
    /// Why the action needs an approval although its kind is configured `auto`.
    pub downgraded: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing is wrong.
    NoAction(String),
    /// Nothing was proposed: humans are told.
    Escalate(String),
    Refused(Refusal),
    Act {
        actions: Vec<PlannedAction>,
        /// The strictest mode among the cluster-changing actions (auto for advice only).
        mode: ActionMode,
        runbook: String,
    },
}

pub fn idempotency_key(incident: &str, kind: ActionKind, target: &str) -> String {
    format!("{incident}:{kind}:{target}")
}

fn strictness(mode: ActionMode) -> u8 {
    match mode {
        ActionMode::Auto => 0,
        ActionMode::Approve => 1,
        ActionMode::DryRun => 2,
    }
}

pub fn plan(
    incident: &str,
    diagnosis: &Diagnosis,
    library: &Library,
    policy: &PolicyConfig,
    history: &History,
    now: DateTime<Utc>,
) -> Plan {
    if diagnosis.root_cause == RootCause::None {
        return Plan::NoAction(format!("nothing to do: {}", diagnosis.summary));
    }
    if diagnosis.recommended_actions.is_empty() {
        return Plan::Escalate(format!(
            "no action recommended for {}; humans notified",
            diagnosis.root_cause
        ));
    }
    // Telling humans needs neither a runbook nor a resource: a diagnosis that only escalates,
    // about nothing nameable (an alert whose names were unusable), is escalated as it stands.
    if diagnosis
        .recommended_actions
        .iter()
        .all(|p| p.kind == ActionKind::Escalate && p.target.parse::<Target>().is_err())
    {
        return Plan::Escalate(format!(
            "{}; no resource to act on; humans notified",
            diagnosis.summary
        ));
    }
    let record_of = |p: &ActionProposal, mode: ActionMode| ActionRecord {
        kind: p.kind,
        target: p.target.clone(),
        params: p.params.clone(),
        idempotency_key: idempotency_key(incident, p.kind, &p.target),
        mode,
        approved_by: None,
    };
    let refuse = |p: &ActionProposal, code: &'static str, reason: String| {
        Plan::Refused(Refusal {
            code,
            reason,
            action: Some(record_of(p, policy.mode_of(p.kind))),
        })
    };
    let first = &diagnosis.recommended_actions[0];
    let Some(cited) = &diagnosis.runbook else {
        return refuse(
            first,
            "no_runbook",
            "no runbook section backs the recommended actions".into(),
        );
    };
    let runbook_name = format!(
        "runbook {} v{} section {:?}",
        cited.id, cited.version, cited.section
    );
    let Some(runbook) = library.runbooks().iter().find(|r| r.front.id == cited.id) else {
        return refuse(
            first,
            "runbook_unknown",
            format!("{runbook_name}: no such runbook is loaded"),
        );
    };
    if runbook.front.version != cited.version {
        return refuse(
            first,
            "runbook_changed",
            format!(
                "{runbook_name}: the loaded runbook is version {}",
                runbook.front.version
            ),
        );
    }
    let Some(section) = runbook.sections.iter().find(|s| s.heading == cited.section) else {
        return refuse(
            first,
            "runbook_changed",
            format!("{runbook_name}: the loaded runbook has no such section"),
        );
    };
    let Some(spec) = &section.spec else {
        return refuse(
            first,
            "not_in_runbook",
            format!("{runbook_name} is reading material: it allows no action"),
        );
    };
    if runbook.reference(section).content_hash != cited.content_hash {
        return refuse(
            first,
            "runbook_changed",
            format!(
                "{runbook_name}: the section text changed since the diagnosis (content hash differs)"
            ),
        );
    }
    if diagnosis.evidence.is_empty() {
        return refuse(
            first,
            "no_evidence",
            "the diagnosis carries no evidence".into(),
        );
    }
    let mut actions = Vec::new();
    let mut mode = ActionMode::Auto;
    for p in &diagnosis.recommended_actions {
        let target = match p.target.parse::<Target>() {
            // A diagnosis may point at a pod; no action acts on one.
            Ok(Target::Object { kind, .. }) => {
                return refuse(p, "invalid_target", format!("no action acts on a {kind}"));
            }
            Ok(t) => t,
            Err(e) => return refuse(p, "invalid_target", e.to_string()),
        };
        let allowed = match allowed_by_section(p, &target, spec) {
            Ok(a) => a,
            Err(reason) => {
                return refuse(p, "not_in_runbook", format!("{runbook_name}: {reason}"));
            }
        };
        if p.evidence_ids.is_empty() {
            return refuse(
                p,
                "no_evidence",
                format!("{} on {} cites no evidence", p.kind, p.target),
            );
        }
        if let Some(missing) = p
            .evidence_ids
            .iter()
            .find(|id| !diagnosis.evidence.iter().any(|e| &e.id == *id))
        {
            return refuse(
                p,
                "no_evidence",
                format!(
                    "{} on {} cites evidence {missing:?} the diagnosis does not carry",
                    p.kind, p.target
                ),
            );
        }
        if let Err(reason) = params_valid(p) {
            return refuse(p, "invalid_params", reason);
        }
        let checked = match guards::check_plan(p, &target, allowed, diagnosis, policy) {
            Ok(c) => c,
            Err(violation) => return refuse(p, violation.code(), violation.to_string()),
        };
        if let Err(reason) = cost_from_telemetry(p, &target, diagnosis) {
            return refuse(p, "cost_not_from_telemetry", reason);
        }
        let (kind_mode, downgraded) = if is_mutating(p.kind) {
            if let Err(refusal) = policy::allows(&p.target, &target, policy, history, now) {
                return refuse(p, refusal.code, refusal.reason);
            }
            policy::mode_for(p.kind, policy)
        } else {
            (ActionMode::Auto, None)
        };
        if strictness(kind_mode) > strictness(mode) {
            mode = kind_mode;
        }
        let (effect, saving) = projected(p);
        actions.push(PlannedAction {
            record: record_of(p, kind_mode),
            reason: format!(
                "{} on {} allowed by {runbook_name}; evidence {}; {}{}",
                p.kind,
                p.target,
                p.evidence_ids.join(", "),
                guards_note(&checked),
                if is_mutating(p.kind) {
                    format!(
                        "policy passed (namespace, cooldown, rate); mode {}{}",
                        mode_name(kind_mode),
                        downgraded
                            .as_ref()
                            .map(|why| format!(" ({why})"))
                            .unwrap_or_default()
                    )
                } else {
                    "changes nothing in the cluster".into()
                }
            ),
            projected_effect: effect,
            projected_saving_usd: saving,
            downgraded,
        });
    }
    // A section with a ladder: its cluster-changing actions are the ladder's first step.
    let rung = spec.ladder.as_ref().map(|l| ladder::Rung {
        runbook: cited.id.clone(),
        version: cited.version.clone(),
        section: cited.section.clone(),
        step: 1,
        max_steps: l.max_steps,
    });
    for a in &mut actions {
        if is_mutating(a.record.kind) {
            a.record.mode = mode;
            if let Some(rung) = &rung {
                a.record
                    .params
                    .insert(ladder::LADDER.into(), rung.to_param());
            }
        }
    }
    Plan::Act {
        actions,
        mode,
        runbook: runbook_name,
    }
}

pub fn mode_name(mode: ActionMode) -> &'static str {
    match mode {
        ActionMode::Auto => "auto",
        ActionMode::Approve => "approve",
        ActionMode::DryRun => "dry_run",
    }
}

/// The guards in words for the ledger: which passed, and which only the cluster can decide.
fn guards_note(checked: &[(guards::Guard, Checked)]) -> String {
    if checked.is_empty() {
        return String::new();
    }
    let list = checked
        .iter()
        .map(|(g, c)| match c {
            Checked::Passed => format!("{} passed", g.code()),
            Checked::Deferred => format!("{} checked before executing", g.code()),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("guards {list}; ")
}

/// The section's entry for the proposal's kind and target kind, with its params in bounds.
fn allowed_by_section<'a>(
    p: &ActionProposal,
    target: &Target,
    spec: &'a SectionSpec,
) -> Result<&'a ActionSpec, String> {
    let Some(allowed) = spec
        .actions
        .iter()
        .find(|a| a.kind == p.kind && a.target == target.kind())
    else {
        return Err(format!(
            "{} on a {} is not among the section's actions",
            p.kind,
            target.kind()
        ));
    };
    for (name, value) in &p.params {
        let Some(rule) = allowed.params.get(name) else {
            continue;
        };
        let bound = |b: &Option<serde_norway::Value>| -> Option<f64> {
            let v: Value = serde_json::to_value(b.as_ref()?).ok()?;
            json_quantity(&v)
        };
        let (min, max) = (bound(&rule.min), bound(&rule.max));
        if min.is_none() && max.is_none() {
            continue;
        }
        let Some(n) = json_quantity(value) else {
            return Err(format!(
                "param {name} = {value} is not a number or quantity"
            ));
        };
        if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
            return Err(format!(
                "param {name} = {value} is outside the runbook's bounds"
            ));
        }
    }
    Ok(allowed)
}

fn param_str<'a>(p: &'a ActionProposal, name: &str) -> Option<&'a str> {
    p.params.get(name).and_then(Value::as_str)
}

fn param_u32(p: &ActionProposal, name: &str) -> Option<u32> {
    p.params
        .get(name)
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
}

/// A container image reference: no whitespace or control characters, bounded.
pub fn valid_image(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 512
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./:-_@".contains(c))
}

fn params_valid(p: &ActionProposal) -> Result<(), String> {
    // The execute-stage guards read `observed_*` params as what the cluster showed: a
    // diagnosis supplying one could pass them off as observed.
    if let Some(name) = p.params.keys().find(|k| k.starts_with("observed_")) {
        return Err(format!(
            "param {name} is recorded by the remediator from the cluster, not proposed"
        ));
    }
    if p.params.contains_key(ladder::LADDER) {
        return Err(format!(
            "param {} is recorded by the remediator from the runbook, not proposed",
            ladder::LADDER
        ));
    }
    match p.kind {
        ActionKind::PatchMemoryLimit => {
            let limit = param_str(p, "memory_limit")
                .ok_or("patch_memory_limit needs params.memory_limit")?;
            if parse_bytes(limit).ok().is_none_or(|b| b == 0) {
                return Err(format!("memory_limit {limit:?} is not a memory quantity"));
            }
        }
        ActionKind::RollbackImage => {
            let image = param_str(p, "image").ok_or("rollback_image needs params.image")?;
            if !valid_image(image) {
                return Err(format!("image {image:?} is not a valid image reference"));
            }
        }
        ActionKind::ScaleInferenceService => {
            param_u32(p, "replicas").ok_or("scale_inference_service needs params.replicas")?;
        }
        ActionKind::ApplyResourceQuota => {
            param_u32(p, "pods")
                .filter(|n| *n >= 1)
                .ok_or("apply_resource_quota needs params.pods >= 1")?;
        }
        _ => {}
    }
    Ok(())
}

/// Scaling a model down and capping a namespace act on cost figures. Those must come from the
/// telemetry the proposal cites (OpenCost through the collector): a namespace total with its
/// budget, showing it over budget. Alert fields are whatever the alert's sender wrote, so a
/// cost known only from them may advise, never act.
fn cost_from_telemetry(
    p: &ActionProposal,
    target: &Target,
    diagnosis: &Diagnosis,
) -> Result<(), String> {
    if !matches!(
        p.kind,
        ActionKind::ScaleInferenceService | ActionKind::ApplyResourceQuota
    ) {
        return Ok(());
    }
    let namespace = match target {
        Target::Namespace(ns) => ns.as_str(),
        other => other.namespace().unwrap_or_default(),
    };
    let figure = |values: &std::collections::BTreeMap<String, Value>, name: &str| {
        values.get(name).and_then(Value::as_f64)
    };
    let totals: Vec<(f64, f64)> = diagnosis
        .evidence
        .iter()
        .filter(|e| {
            e.source == EvidenceSource::Telemetry
                && e.error.is_none()
                && p.evidence_ids.contains(&e.id)
                && e.values.get("namespace").and_then(Value::as_str) == Some(namespace)
                && e.values.get("pod").is_none_or(Value::is_null)
        })
        .filter_map(|e| {
            Some((
                figure(&e.values, "hourly_cost_usd")?,
                figure(&e.values, "hourly_budget_usd")?,
            ))
        })
        .collect();
    match totals.iter().find(|(cost, budget)| cost > budget) {
        Some(_) => Ok(()),
        None if totals.is_empty() => Err(format!(
            "{} on {} cites no telemetry with {namespace}'s hourly cost and budget: cost figures from alert fields may only advise",
            p.kind, p.target
        )),
        None => Err(format!(
            "{} on {}: the telemetry it cites shows {namespace} within its budget (${:.2}/h of ${:.2}/h)",
            p.kind, p.target, totals[0].0, totals[0].1
        )),
    }
}

fn projected(p: &ActionProposal) -> (String, Option<f64>) {
    let s = |n: &str| param_str(p, n).unwrap_or("unknown").to_owned();
    match p.kind {
        ActionKind::PatchMemoryLimit => (
            format!(
                "{}: memory limit of kserve-container {} → {} (requests unchanged); predictor pods roll",
                p.target,
                s("previous_memory_limit"),
                s("memory_limit")
            ),
            None,
        ),
        ActionKind::RestartInferenceService => (
            format!("{}: rolling restart of the predictor pods", p.target),
            None,
        ),
        ActionKind::ScaleInferenceService => (
            format!(
                "{}: {} → {} replicas",
                p.target,
                param_u32(p, "previous_replicas").map_or("?".into(), |n| n.to_string()),
                param_u32(p, "replicas").map_or("?".into(), |n| n.to_string())
            ),
            None,
        ),
        ActionKind::RollbackImage => (
            format!(
                "{}: image {} → {}",
                p.target,
                s("failing_image"),
                s("image")
            ),
            None,
        ),
        ActionKind::ApplyResourceQuota => (
            format!(
                "{}: ResourceQuota opsmesh-cost-guard (pods ≤ {}) and LimitRange opsmesh-default-limits",
                p.target,
                param_u32(p, "pods").map_or("?".into(), |n| n.to_string())
            ),
            p.params.get("projected_saving_usd").and_then(json_quantity),
        ),
        ActionKind::ArgocdSync => (format!("{}: sync the live state to git", p.target), None),
        ActionKind::SuggestPolicyFix => (
            format!(
                "{}: the fix is handed to the developer; nothing changes",
                p.target
            ),
            None,
        ),
        ActionKind::RollbackStorageUri => (
            format!(
                "{}: storage URI {} → {} (the previous revision's); predictor pods roll",
                p.target,
                s("failing_storage_uri"),
                s("storage_uri")
            ),
            None,
        ),
        ActionKind::SetCanaryTraffic => (
            format!(
                "{}: canary traffic {}% → {}%; the stable revision takes the rest",
                p.target,
                param_u32(p, "previous_traffic_percent").map_or("?".into(), |n| n.to_string()),
                param_u32(p, "traffic_percent").map_or("?".into(), |n| n.to_string())
            ),
            None,
        ),
        ActionKind::RaiseMaxReplicas => (
            format!(
                "{}: maxReplicas {} → {}; the autoscaler may add pods up to the new bound",
                p.target,
                param_u32(p, "previous_max_replicas").map_or("?".into(), |n| n.to_string()),
                param_u32(p, "max_replicas").map_or("?".into(), |n| n.to_string())
            ),
            None,
        ),
        ActionKind::AdviseCapacity => (
            format!("{}: capacity advice for the developer", p.target),
            None,
        ),
        ActionKind::Escalate => (format!("{}: humans are notified", p.target), None),
    }
}

pub mod ladder;
#[cfg(test)]
mod tests;
