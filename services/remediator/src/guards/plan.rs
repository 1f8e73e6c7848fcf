//! The plan stage: the guards the diagnosis' params, its cited evidence and the policy can
//! decide before an action is admitted.

use std::collections::BTreeMap;

use serde_json::Value;

use opsmesh_proto::{
    ActionKind, Target,
    diagnosis::{ActionProposal, Diagnosis},
};
use opsmesh_runbooks::ActionSpec;

use crate::config::PolicyConfig;

use super::{
    Checked, Guard, GuardViolation,
    rules::{
        above_floor, below_ceiling, count, count_param, max_replicas_raise_fits, new_max_replicas,
        not_lowered, quantity, required, within_blast_radius,
    },
};

/// Every check a runbook section lists for the action must be one the remediator implements
/// for that action: a runbook counting on a protection that does not exist is refused.
pub fn known_checks(kind: ActionKind, spec: &ActionSpec) -> Result<(), GuardViolation> {
    match spec
        .checks
        .iter()
        .find(|c| Guard::from_code(c).is_none_or(|g| g.kind() != kind))
    {
        Some(check) => Err(GuardViolation::UnknownCheck {
            check: check.clone(),
            kind,
        }),
        None => Ok(()),
    }
}

/// The values of the evidence `p` cites whose record is about the InferenceService
/// `namespace/name` (telemetry records and alert rows carry `namespace` and `name` or
/// `model_name`).
fn evidence_about<'a>(
    p: &'a ActionProposal,
    diagnosis: &'a Diagnosis,
    namespace: &'a str,
    name: Option<&'a str>,
) -> impl Iterator<Item = &'a BTreeMap<String, Value>> {
    diagnosis
        .evidence
        .iter()
        .filter(|e| e.error.is_none() && p.evidence_ids.contains(&e.id))
        .map(|e| &e.values)
        .filter(move |v| {
            v.get("namespace").and_then(Value::as_str) == Some(namespace)
                && name.is_none_or(|n| {
                    ["name", "model_name"]
                        .iter()
                        .any(|k| v.get(*k).and_then(Value::as_str) == Some(n))
                })
        })
}

/// The plan stage: checks every guard of `p` that the diagnosis' params and cited evidence
/// and the policy can decide, after checking that the section's `checks:` are all known.
/// Returns each guard of the action with whether it passed or waits for the cluster.
pub fn check_plan(
    p: &ActionProposal,
    target: &Target,
    spec: &ActionSpec,
    diagnosis: &Diagnosis,
    policy: &PolicyConfig,
) -> Result<Vec<(Guard, Checked)>, GuardViolation> {
    known_checks(p.kind, spec)?;
    let isvc = match target {
        Target::InferenceService { namespace, name } => Some((namespace.as_str(), name.as_str())),
        _ => None,
    };
    let about = |ns, name| evidence_about(p, diagnosis, ns, name);
    let decided = |passed: bool| {
        if passed {
            Checked::Passed
        } else {
            Checked::Deferred
        }
    };
    Ok(match p.kind {
        ActionKind::PatchMemoryLimit => {
            let guard = Guard::MemoryNotLowered;
            let new = required(
                quantity(&p.params, "memory_limit", guard)?,
                guard,
                "the new memory_limit is missing",
            )?;
            // Every current limit the diagnosis knows of: its rollback param and the limit the
            // cited evidence saw; the new limit must be above all of them.
            let mut current: Vec<(String, u64)> = Vec::new();
            current.extend(quantity(&p.params, "previous_memory_limit", guard)?);
            if let Some((ns, name)) = isvc {
                for values in about(ns, Some(name)) {
                    current.extend(quantity(values, "memory_limit", guard)?);
                }
            }
            for c in &current {
                not_lowered(&new, c)?;
            }
            below_ceiling(&new, policy)?;
            vec![
                (Guard::MemoryNotLowered, decided(!current.is_empty())),
                (Guard::MemoryCeiling, Checked::Passed),
            ]
        }
        ActionKind::ScaleInferenceService => {
            let replicas = required(
                count_param(&p.params, "replicas", Guard::ReplicaFloor)?,
                Guard::ReplicaFloor,
                "the replica count is missing",
            )?;
            above_floor(replicas, policy)?;
            let mut current: Vec<u64> = Vec::new();
            current.extend(count_param(
                &p.params,
                "previous_replicas",
                Guard::BlastRadius,
            )?);
            if let Some((ns, name)) = isvc {
                current.extend(about(ns, Some(name)).filter_map(|v| count(v.get("replicas")?)));
            }
            for c in &current {
                within_blast_radius(*c, replicas, policy)?;
            }
            vec![
                (Guard::ReplicaFloor, Checked::Passed),
                (Guard::BlastRadius, decided(!current.is_empty())),
            ]
        }
        ActionKind::ApplyResourceQuota => {
            let guard = Guard::QuotaCoversUsage;
            let pods = required(
                count_param(&p.params, "pods", guard)?,
                guard,
                "the pod quota is missing",
            )?;
            let usage = match target {
                Target::Namespace(ns) => planned_usage(p, diagnosis, ns),
                _ => None,
            };
            if let Some(usage) = usage
                && pods < usage
            {
                return Err(GuardViolation::QuotaBelowUsage {
                    pods,
                    usage,
                    basis: "runs after the planned scale-down (diagnosis evidence)",
                });
            }
            vec![(guard, decided(usage.is_some()))]
        }
        ActionKind::RollbackImage => {
            let image = required(
                p.params.get("image").and_then(Value::as_str),
                Guard::ImageChanges,
                "the image is missing",
            )?;
            let evidence: Vec<&BTreeMap<String, Value>> = match isvc {
                Some((ns, name)) => about(ns, Some(name)).collect(),
                None => Vec::new(),
            };
            let running: Vec<&str> = p
                .params
                .get("failing_image")
                .into_iter()
                .chain(evidence.iter().filter_map(|v| v.get("image")))
                .filter_map(Value::as_str)
                .collect();
            if running.contains(&image) {
                return Err(GuardViolation::ImageUnchanged {
                    image: image.to_owned(),
                });
            }
            let known_good: Vec<&str> = evidence
                .iter()
                .filter_map(|v| v.get("last_known_good_image")?.as_str())
                .collect();
            if let Some(other) = known_good.iter().find(|k| **k != image) {
                return Err(GuardViolation::ImageNotKnownGood {
                    image: image.to_owned(),
                    known_good: Some((*other).to_owned()),
                });
            }
            vec![
                (Guard::ImageChanges, decided(!running.is_empty())),
                (Guard::ImageKnownGood, decided(!known_good.is_empty())),
            ]
        }
        ActionKind::RaiseMaxReplicas => {
            let new = new_max_replicas(&p.params, policy)?;
            let guard = Guard::MaxReplicasRaised;
            let current = count_param(&p.params, "previous_max_replicas", guard)?;
            let headroom = count_param(
                &p.params,
                "pod_quota_headroom",
                Guard::MaxReplicasWithinQuota,
            )?;
            if let Some(current) = current {
                max_replicas_raise_fits(new, current, headroom)?;
            }
            // The bound is re-read from the cluster just before the patch.
            vec![
                (Guard::MaxReplicasCeiling, Checked::Passed),
                (Guard::MaxReplicasRaised, Checked::Deferred),
                (Guard::MaxReplicasWithinQuota, Checked::Passed),
            ]
        }
        ActionKind::RestartInferenceService
        | ActionKind::RollbackStorageUri
        | ActionKind::SetCanaryTraffic
        | ActionKind::ArgocdSync
        | ActionKind::AdviseCapacity
        | ActionKind::SuggestPolicyFix
        | ActionKind::Escalate => Vec::new(),
    })
}

/// The pods the namespace runs once the diagnosis' own scale-downs are done, from the
/// InferenceServices its evidence describes (the largest replica count seen for each, or the
/// planned one when a proposal scales it); `None` when the evidence describes none.
fn planned_usage(p: &ActionProposal, diagnosis: &Diagnosis, namespace: &str) -> Option<u64> {
    let mut replicas: BTreeMap<&str, u64> = BTreeMap::new();
    for values in evidence_about(p, diagnosis, namespace, None) {
        let name = values.get("name").and_then(Value::as_str);
        if let Some((name, n)) = name.zip(values.get("replicas").and_then(count)) {
            let seen = replicas.entry(name).or_default();
            *seen = (*seen).max(n);
        }
    }
    if replicas.is_empty() {
        return None;
    }
    for scale in diagnosis
        .recommended_actions
        .iter()
        .filter(|a| a.kind == ActionKind::ScaleInferenceService)
    {
        if let Ok(Target::InferenceService {
            namespace: ns,
            name,
        }) = scale.target.parse::<Target>()
            && ns == namespace
            && let Some(seen) = replicas.get_mut(name.as_str())
            && let Some(planned) = scale.params.get("replicas").and_then(count)
        {
            *seen = planned;
        }
    }
    Some(replicas.values().sum())
}
