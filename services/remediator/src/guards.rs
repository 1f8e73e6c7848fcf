//! Machine-checked runbook guards. A runbook's `guards:` are sentences for humans; the ones a
//! machine can decide from numbers are checked here, twice: when the action is planned (from
//! the diagnosis' params and evidence, and the policy), and again just before it runs (from the
//! values [`Cluster::observe`](crate::cluster::Cluster::observe) read from the cluster at that
//! moment). The diagnosis can be stale or wrong — it may not know the current memory limit at
//! all — so only the second check is authoritative; the first refuses early what is already
//! visibly wrong. A violation names its guard by a stable code, which is also the refusal's
//! metrics label and the name a runbook's `checks:` list uses.

use std::collections::BTreeMap;

use serde_json::Value;

use opsmesh_proto::{
    ActionKind,
    diagnosis::{ActionProposal, Diagnosis},
    remediation::ActionRecord,
};
use opsmesh_runbooks::ActionSpec;

use opsmesh_proto::{Target, quantity::parse_bytes};

use crate::config::PolicyConfig;

/// One machine-checked guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// `patch_memory_limit`: the new limit is above the current one (never equal or lower).
    MemoryNotLowered,
    /// `patch_memory_limit`: the new limit is at or below the policy's memory ceiling.
    MemoryCeiling,
    /// `scale_inference_service`: never below the policy's replica floor.
    ReplicaFloor,
    /// `scale_inference_service`: takes away at most `max_replica_reduction` of the replicas.
    BlastRadius,
    /// `apply_resource_quota`: the pod quota is at or above the namespace's pods.
    QuotaCoversUsage,
    /// `rollback_image`: the image differs from the one running now.
    ImageChanges,
    /// `rollback_image`: the image is the InferenceService's last known good image.
    ImageKnownGood,
}

impl Guard {
    pub const ALL: [Guard; 7] = [
        Guard::MemoryNotLowered,
        Guard::MemoryCeiling,
        Guard::ReplicaFloor,
        Guard::BlastRadius,
        Guard::QuotaCoversUsage,
        Guard::ImageChanges,
        Guard::ImageKnownGood,
    ];

    /// The stable code: refusal reason code, metrics label, runbook `checks:` entry.
    pub fn code(self) -> &'static str {
        match self {
            Guard::MemoryNotLowered => "memory_not_lowered",
            Guard::MemoryCeiling => "memory_ceiling",
            Guard::ReplicaFloor => "replica_floor",
            Guard::BlastRadius => "blast_radius",
            Guard::QuotaCoversUsage => "quota_covers_usage",
            Guard::ImageChanges => "image_changes",
            Guard::ImageKnownGood => "image_known_good",
        }
    }

    /// The action the guard is about.
    pub fn kind(self) -> ActionKind {
        match self {
            Guard::MemoryNotLowered | Guard::MemoryCeiling => ActionKind::PatchMemoryLimit,
            Guard::ReplicaFloor | Guard::BlastRadius => ActionKind::ScaleInferenceService,
            Guard::QuotaCoversUsage => ActionKind::ApplyResourceQuota,
            Guard::ImageChanges | Guard::ImageKnownGood => ActionKind::RollbackImage,
        }
    }

    pub fn from_code(code: &str) -> Option<Guard> {
        Guard::ALL.into_iter().find(|g| g.code() == code)
    }

    /// Every guard of `kind`, in the order they are checked.
    pub fn of(kind: ActionKind) -> impl Iterator<Item = Guard> {
        Guard::ALL.into_iter().filter(move |g| g.kind() == kind)
    }
}

/// Why a guard refused an action.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuardViolation {
    #[error("new limit {new} is {relation} the current {current}")]
    MemoryLowered {
        new: String,
        current: String,
        /// `below` or `equal to`.
        relation: &'static str,
    },
    #[error("new limit {new} is above the policy ceiling {ceiling}")]
    MemoryAboveCeiling { new: String, ceiling: String },
    #[error("{replicas} replicas is below the policy floor of {floor}")]
    BelowReplicaFloor { replicas: u64, floor: u32 },
    #[error(
        "scaling {current} → {replicas} takes away {:.0}% of the replicas; the policy allows {:.0}%",
        share * 100.0,
        allowed * 100.0
    )]
    BlastRadius {
        current: u64,
        replicas: u64,
        share: f64,
        allowed: f64,
    },
    #[error("a quota of {pods} pods is below the {usage} pods the namespace {basis}")]
    QuotaBelowUsage {
        pods: u64,
        usage: u64,
        /// Where the usage comes from (`runs now`, `runs after the planned scale-down`).
        basis: &'static str,
    },
    #[error("{image} is already the current image: rolling back to it changes nothing")]
    ImageUnchanged { image: String },
    #[error(
        "{image} is not the InferenceService's last known good image ({})",
        known_good.as_deref().unwrap_or("none recorded")
    )]
    ImageNotKnownGood {
        image: String,
        known_good: Option<String>,
    },
    /// A value the guard needs is missing or garbled: the guard fails closed.
    #[error("{what}, so the guard cannot be checked")]
    Unverifiable { guard: Guard, what: String },
    /// The runbook section asks for a check this remediator does not implement for the action.
    #[error(
        "the runbook section requires check {check:?} for {kind}, which the remediator does not implement for it (known: {})",
        Guard::of(*kind).map(Guard::code).collect::<Vec<_>>().join(", ")
    )]
    UnknownCheck { check: String, kind: ActionKind },
}

impl GuardViolation {
    /// The guard that refused; `None` for a check the runbook names but nothing implements.
    pub fn guard(&self) -> Option<Guard> {
        Some(match self {
            Self::MemoryLowered { .. } => Guard::MemoryNotLowered,
            Self::MemoryAboveCeiling { .. } => Guard::MemoryCeiling,
            Self::BelowReplicaFloor { .. } => Guard::ReplicaFloor,
            Self::BlastRadius { .. } => Guard::BlastRadius,
            Self::QuotaBelowUsage { .. } => Guard::QuotaCoversUsage,
            Self::ImageUnchanged { .. } => Guard::ImageChanges,
            Self::ImageNotKnownGood { .. } => Guard::ImageKnownGood,
            Self::Unverifiable { guard, .. } => *guard,
            Self::UnknownCheck { .. } => return None,
        })
    }

    /// The refusal's stable code (metrics label).
    pub fn code(&self) -> &'static str {
        self.guard().map_or("unknown_check", Guard::code)
    }
}

/// What the plan stage could decide about one guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Passed,
    /// The diagnosis does not carry the value; only the check before executing can decide.
    Deferred,
}

/// Reads a quantity param: `None` when absent or null, an error when garbled.
fn quantity(
    params: &BTreeMap<String, Value>,
    name: &str,
    guard: Guard,
) -> Result<Option<(String, u64)>, GuardViolation> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match parse_bytes(s) {
            Ok(b) => Ok(Some((s.clone(), b))),
            Err(_) => Err(GuardViolation::Unverifiable {
                guard,
                what: format!("{name} {s:?} is not a memory quantity"),
            }),
        },
        Some(other) => Err(GuardViolation::Unverifiable {
            guard,
            what: format!("{name} {other} is not a memory quantity"),
        }),
    }
}

fn count(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str()?.trim().parse().ok())
}

fn count_param(
    params: &BTreeMap<String, Value>,
    name: &str,
    guard: Guard,
) -> Result<Option<u64>, GuardViolation> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => count(v)
            .map(Some)
            .ok_or_else(|| GuardViolation::Unverifiable {
                guard,
                what: format!("{name} {v} is not a count"),
            }),
    }
}

fn required<T>(value: Option<T>, guard: Guard, what: &str) -> Result<T, GuardViolation> {
    value.ok_or_else(|| GuardViolation::Unverifiable {
        guard,
        what: what.to_owned(),
    })
}

fn not_lowered(new: &(String, u64), current: &(String, u64)) -> Result<(), GuardViolation> {
    if new.1 > current.1 {
        return Ok(());
    }
    Err(GuardViolation::MemoryLowered {
        new: new.0.clone(),
        current: current.0.clone(),
        relation: if new.1 == current.1 {
            "equal to"
        } else {
            "below"
        },
    })
}

fn below_ceiling(new: &(String, u64), policy: &PolicyConfig) -> Result<(), GuardViolation> {
    let ceiling = parse_bytes(&policy.memory_ceiling).unwrap_or(u64::MAX);
    if new.1 > ceiling {
        return Err(GuardViolation::MemoryAboveCeiling {
            new: new.0.clone(),
            ceiling: policy.memory_ceiling.clone(),
        });
    }
    Ok(())
}

fn above_floor(replicas: u64, policy: &PolicyConfig) -> Result<(), GuardViolation> {
    if replicas < u64::from(policy.replica_floor) {
        return Err(GuardViolation::BelowReplicaFloor {
            replicas,
            floor: policy.replica_floor,
        });
    }
    Ok(())
}

fn within_blast_radius(
    current: u64,
    replicas: u64,
    policy: &PolicyConfig,
) -> Result<(), GuardViolation> {
    if current == 0 || replicas >= current {
        return Ok(());
    }
    let share = (current - replicas) as f64 / current as f64;
    // The tolerance keeps a reduction of exactly the allowed share (e.g. 8 → 2 at 0.75) legal.
    if share > policy.max_replica_reduction + 1e-9 {
        return Err(GuardViolation::BlastRadius {
            current,
            replicas,
            share,
            allowed: policy.max_replica_reduction,
        });
    }
    Ok(())
}

/// Every check a runbook section lists for the action must be one the remediator implements
/// for that action: a runbook counting on a protection that does not exist is refused.
fn known_checks(kind: ActionKind, spec: &ActionSpec) -> Result<(), GuardViolation> {
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
        ActionKind::RestartInferenceService
        | ActionKind::ArgocdSync
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

/// The execute stage: every guard of `a`, against the `observed_*` values
/// [`Cluster::observe`](crate::cluster::Cluster::observe) just read and merged into its params.
/// The plan refuses proposals that name `observed_*` params, so these values can only come
/// from the cluster. A value the guard needs but the cluster did not show fails it.
pub fn check_execute(a: &ActionRecord, policy: &PolicyConfig) -> Result<(), GuardViolation> {
    let params = &a.params;
    match a.kind {
        ActionKind::PatchMemoryLimit => {
            let guard = Guard::MemoryNotLowered;
            let new = required(
                quantity(params, "memory_limit", guard)?,
                guard,
                "the new memory_limit is missing",
            )?;
            let current = required(
                quantity(params, "observed_memory_limit", guard)?,
                guard,
                &format!(
                    "the InferenceService sets no memory limit now (unlimited: {} could be below what it uses)",
                    new.0
                ),
            )?;
            not_lowered(&new, &current)?;
            below_ceiling(&new, policy)
        }
        ActionKind::ScaleInferenceService => {
            let replicas = required(
                count_param(params, "replicas", Guard::ReplicaFloor)?,
                Guard::ReplicaFloor,
                "the replica count is missing",
            )?;
            above_floor(replicas, policy)?;
            let current = required(
                count_param(params, "observed_replicas", Guard::BlastRadius)?,
                Guard::BlastRadius,
                "the current replica count was not observed",
            )?;
            within_blast_radius(current, replicas, policy)
        }
        ActionKind::ApplyResourceQuota => {
            let guard = Guard::QuotaCoversUsage;
            let pods = required(
                count_param(params, "pods", guard)?,
                guard,
                "the pod quota is missing",
            )?;
            let usage = required(
                count_param(params, "observed_pods", guard)?,
                guard,
                "the namespace's pods were not observed",
            )?;
            if pods < usage {
                return Err(GuardViolation::QuotaBelowUsage {
                    pods,
                    usage,
                    basis: "runs now",
                });
            }
            Ok(())
        }
        ActionKind::RollbackImage => {
            let image = required(
                params.get("image").and_then(Value::as_str),
                Guard::ImageChanges,
                "the image is missing",
            )?;
            let running = required(
                params.get("observed_image").and_then(Value::as_str),
                Guard::ImageChanges,
                "the current image was not observed",
            )?;
            if running == image {
                return Err(GuardViolation::ImageUnchanged {
                    image: image.to_owned(),
                });
            }
            let known_good = params
                .get("observed_last_known_good_image")
                .and_then(Value::as_str);
            if known_good != Some(image) {
                return Err(GuardViolation::ImageNotKnownGood {
                    image: image.to_owned(),
                    known_good: known_good.map(str::to_owned),
                });
            }
            Ok(())
        }
        ActionKind::RestartInferenceService
        | ActionKind::ArgocdSync
        | ActionKind::SuggestPolicyFix
        | ActionKind::Escalate => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use opsmesh_proto::{
        RootCause,
        diagnosis::{Evidence, EvidenceSource},
        remediation::ActionMode,
    };
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn policy() -> PolicyConfig {
        PolicyConfig {
            memory_ceiling: "16Gi".into(),
            replica_floor: 2,
            max_replica_reduction: 0.75,
            ..PolicyConfig::default()
        }
    }

    fn params(v: Value) -> BTreeMap<String, Value> {
        match v {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    fn record(kind: ActionKind, target: &str, p: Value) -> ActionRecord {
        ActionRecord {
            kind,
            target: target.into(),
            params: params(p),
            idempotency_key: format!("i:{kind}:{target}"),
            mode: ActionMode::Auto,
            approved_by: None,
        }
    }

    const ISVC: &str = "inferenceservice/ml/llama";

    fn execute(kind: ActionKind, p: Value) -> Result<(), GuardViolation> {
        let target = if kind == ActionKind::ApplyResourceQuota {
            "namespace/ml"
        } else {
            ISVC
        };
        check_execute(&record(kind, target, p), &policy())
    }

    fn code(r: Result<(), GuardViolation>) -> &'static str {
        r.map_or_else(|v| v.code(), |()| "ok")
    }

    #[test]
    fn codes_are_unique_and_round_trip() {
        for g in Guard::ALL {
            assert_eq!(Guard::from_code(g.code()), Some(g));
            assert_eq!(
                Guard::ALL.iter().filter(|o| o.code() == g.code()).count(),
                1
            );
        }
        assert_eq!(Guard::from_code("memory_lowered"), None);
        assert_eq!(
            Guard::of(ActionKind::PatchMemoryLimit).collect::<Vec<_>>(),
            [Guard::MemoryNotLowered, Guard::MemoryCeiling]
        );
    }

    #[test]
    fn memory_is_raised_below_the_ceiling_before_executing() {
        let patch = ActionKind::PatchMemoryLimit;
        assert_eq!(
            code(execute(
                patch,
                json!({"memory_limit": "640Mi", "observed_memory_limit": "256Mi"})
            )),
            "ok"
        );
        let lowered = execute(
            patch,
            json!({"memory_limit": "1Gi", "observed_memory_limit": "32Gi"}),
        )
        .unwrap_err();
        assert_eq!(lowered.code(), "memory_not_lowered");
        assert_eq!(
            lowered.to_string(),
            "new limit 1Gi is below the current 32Gi"
        );
        let equal = execute(
            patch,
            json!({"memory_limit": "1Gi", "observed_memory_limit": "1024Mi"}),
        )
        .unwrap_err();
        assert_eq!(
            equal.to_string(),
            "new limit 1Gi is equal to the current 1024Mi"
        );
        let high = execute(
            patch,
            json!({"memory_limit": "32Gi", "observed_memory_limit": "8Gi"}),
        )
        .unwrap_err();
        assert_eq!(high.code(), "memory_ceiling");
        assert_eq!(
            high.to_string(),
            "new limit 32Gi is above the policy ceiling 16Gi"
        );
        let unlimited = execute(patch, json!({"memory_limit": "1Gi"})).unwrap_err();
        assert_eq!(unlimited.code(), "memory_not_lowered", "{unlimited}");
        assert!(
            unlimited.to_string().contains("sets no memory limit now"),
            "{unlimited}"
        );
        assert_eq!(
            code(execute(
                patch,
                json!({"memory_limit": "1Gi", "observed_memory_limit": "a lot"})
            )),
            "memory_not_lowered",
            "a garbled observation fails closed"
        );
    }

    #[test]
    fn scaling_keeps_the_floor_and_the_blast_radius_before_executing() {
        let scale = ActionKind::ScaleInferenceService;
        assert_eq!(
            code(execute(
                scale,
                json!({"replicas": 2, "observed_replicas": 8})
            )),
            "ok",
            "exactly the allowed 75%"
        );
        assert_eq!(
            code(execute(
                scale,
                json!({"replicas": 1, "observed_replicas": 1})
            )),
            "replica_floor"
        );
        let wide = execute(scale, json!({"replicas": 2, "observed_replicas": 10})).unwrap_err();
        assert_eq!(wide.code(), "blast_radius");
        assert_eq!(
            wide.to_string(),
            "scaling 10 → 2 takes away 80% of the replicas; the policy allows 75%"
        );
        assert_eq!(
            code(execute(
                scale,
                json!({"replicas": 4, "observed_replicas": 2})
            )),
            "ok",
            "scaling up takes nothing away"
        );
        assert_eq!(
            code(execute(scale, json!({"replicas": 2}))),
            "blast_radius",
            "unobserved"
        );
    }

    #[test]
    fn the_quota_covers_the_pods_running_now() {
        let quota = ActionKind::ApplyResourceQuota;
        assert_eq!(
            code(execute(quota, json!({"pods": 4, "observed_pods": 3}))),
            "ok"
        );
        assert_eq!(
            code(execute(quota, json!({"pods": 4, "observed_pods": 4}))),
            "ok"
        );
        let below = execute(quota, json!({"pods": 4, "observed_pods": 9})).unwrap_err();
        assert_eq!(below.code(), "quota_covers_usage");
        assert_eq!(
            below.to_string(),
            "a quota of 4 pods is below the 9 pods the namespace runs now"
        );
        assert_eq!(
            code(execute(quota, json!({"pods": 4}))),
            "quota_covers_usage"
        );
    }

    #[test]
    fn a_rollback_goes_to_the_known_good_image_and_changes_it() {
        let rollback = ActionKind::RollbackImage;
        let good = json!({"image": "img:1", "observed_image": "img:2", "observed_last_known_good_image": "img:1"});
        assert_eq!(code(execute(rollback, good)), "ok");
        let same = execute(
            rollback,
            json!({"image": "img:1", "observed_image": "img:1", "observed_last_known_good_image": "img:1"}),
        )
        .unwrap_err();
        assert_eq!(same.code(), "image_changes");
        let other = execute(
            rollback,
            json!({"image": "img:0", "observed_image": "img:2", "observed_last_known_good_image": "img:1"}),
        )
        .unwrap_err();
        assert_eq!(other.code(), "image_known_good");
        assert_eq!(
            other.to_string(),
            "img:0 is not the InferenceService's last known good image (img:1)"
        );
        assert_eq!(
            execute(
                rollback,
                json!({"image": "img:1", "observed_image": "img:2"})
            )
            .unwrap_err()
            .to_string(),
            "img:1 is not the InferenceService's last known good image (none recorded)"
        );
        assert_eq!(
            code(execute(rollback, json!({"image": "img:1"}))),
            "image_changes",
            "unobserved"
        );
    }

    #[test]
    fn unparameterised_actions_have_no_guards() {
        for kind in [
            ActionKind::RestartInferenceService,
            ActionKind::ArgocdSync,
            ActionKind::SuggestPolicyFix,
            ActionKind::Escalate,
        ] {
            assert_eq!(code(execute(kind, json!({}))), "ok");
            assert_eq!(Guard::of(kind).count(), 0);
        }
    }

    // ---- plan stage ----

    fn proposal(kind: ActionKind, target: &str, p: Value) -> ActionProposal {
        ActionProposal {
            kind,
            target: target.into(),
            params: params(p),
            evidence_ids: vec!["ev1".into(), "ev2".into()],
            rationale: String::new(),
        }
    }

    fn telemetry(id: &str, values: Value) -> Evidence {
        Evidence {
            id: id.into(),
            source: EvidenceSource::Telemetry,
            query: "opsmesh.telemetry.v1".into(),
            earliest: None,
            latest: None,
            row_count: 1,
            values: params(values),
            error: None,
        }
    }

    fn diagnosis(actions: Vec<ActionProposal>, evidence: Vec<Evidence>) -> Diagnosis {
        Diagnosis {
            alert_ids: Vec::new(),
            fingerprint: "fp".into(),
            root_cause: RootCause::OomKilled,
            confidence: 0.9,
            target: None,
            summary: String::new(),
            evidence,
            runbook: None,
            recommended_actions: actions,
            explanation: String::new(),
            narrative: None,
            developer_fix: None,
            llm: Default::default(),
        }
    }

    fn spec(kind: ActionKind, checks: &[&str]) -> ActionSpec {
        ActionSpec {
            kind,
            target: "inferenceservice".into(),
            params: BTreeMap::new(),
            guards: vec!["in words".into()],
            checks: checks.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// The plan stage for the first proposal of `d`.
    fn plan(d: &Diagnosis, checks: &[&str]) -> Result<Vec<(Guard, Checked)>, GuardViolation> {
        let p = &d.recommended_actions[0];
        let target = p.target.parse::<Target>().unwrap();
        check_plan(p, &target, &spec(p.kind, checks), d, &policy())
    }

    fn model(id: &str, name: &str, extra: Value) -> Evidence {
        let mut values = json!({"namespace": "ml", "name": name});
        values
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        telemetry(id, values)
    }

    #[test]
    fn the_plan_refuses_a_memory_limit_the_diagnosis_knows_is_lower() {
        let patch = |p: Value| proposal(ActionKind::PatchMemoryLimit, ISVC, p);
        let by_param = diagnosis(
            vec![patch(
                json!({"memory_limit": "1Gi", "previous_memory_limit": "32Gi"}),
            )],
            Vec::new(),
        );
        let v = plan(&by_param, &[]).unwrap_err();
        assert_eq!(
            (v.code(), v.to_string().as_str()),
            (
                "memory_not_lowered",
                "new limit 1Gi is below the current 32Gi"
            )
        );
        // The diagnosis forgot the rollback param, but its evidence saw the limit.
        let by_evidence = diagnosis(
            vec![patch(
                json!({"memory_limit": "1Gi", "previous_memory_limit": null}),
            )],
            vec![model("ev2", "llama", json!({"memory_limit": "32Gi"}))],
        );
        assert_eq!(
            plan(&by_evidence, &[]).unwrap_err().code(),
            "memory_not_lowered"
        );
        // Evidence about another model says nothing about this one.
        let unknown = diagnosis(
            vec![patch(json!({"memory_limit": "1Gi"}))],
            vec![model("ev2", "other", json!({"memory_limit": "32Gi"}))],
        );
        assert_eq!(
            plan(&unknown, &[]).unwrap(),
            [
                (Guard::MemoryNotLowered, Checked::Deferred),
                (Guard::MemoryCeiling, Checked::Passed)
            ]
        );
        let raised = diagnosis(
            vec![patch(
                json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
            )],
            vec![model("ev2", "llama", json!({"memory_limit": "256Mi"}))],
        );
        assert_eq!(
            plan(&raised, &["memory_not_lowered", "memory_ceiling"]).unwrap(),
            [
                (Guard::MemoryNotLowered, Checked::Passed),
                (Guard::MemoryCeiling, Checked::Passed)
            ]
        );
        let high = diagnosis(vec![patch(json!({"memory_limit": "17Gi"}))], Vec::new());
        assert_eq!(plan(&high, &[]).unwrap_err().code(), "memory_ceiling");
    }

    #[test]
    fn the_plan_checks_scaling_against_the_replicas_the_evidence_saw() {
        let scale = |p: Value| proposal(ActionKind::ScaleInferenceService, ISVC, p);
        let floor = diagnosis(vec![scale(json!({"replicas": 1}))], Vec::new());
        assert_eq!(plan(&floor, &[]).unwrap_err().code(), "replica_floor");
        let wide = diagnosis(
            vec![scale(json!({"replicas": 2, "previous_replicas": 8}))],
            vec![model("ev2", "llama", json!({"replicas": 10}))],
        );
        assert_eq!(plan(&wide, &[]).unwrap_err().code(), "blast_radius");
        let fine = diagnosis(
            vec![scale(json!({"replicas": 2, "previous_replicas": 8}))],
            vec![model("ev2", "llama", json!({"replicas": 8}))],
        );
        assert_eq!(
            plan(&fine, &[]).unwrap(),
            [
                (Guard::ReplicaFloor, Checked::Passed),
                (Guard::BlastRadius, Checked::Passed)
            ]
        );
    }

    #[test]
    fn the_plan_sizes_usage_after_its_own_scale_down() {
        let quota = |pods: u32| {
            proposal(
                ActionKind::ApplyResourceQuota,
                "namespace/ml",
                json!({"pods": pods}),
            )
        };
        let scale = proposal(
            ActionKind::ScaleInferenceService,
            "inferenceservice/ml/big",
            json!({"replicas": 2, "previous_replicas": 8}),
        );
        let evidence = || {
            vec![
                model("ev1", "big", json!({"replicas": 8})),
                model("ev2", "small", json!({"replicas": 1})),
            ]
        };
        let with_scale = |pods| diagnosis(vec![quota(pods), scale.clone()], evidence());
        assert_eq!(
            plan(&with_scale(4), &[]).unwrap(),
            [(Guard::QuotaCoversUsage, Checked::Passed)],
            "2 + 1 after the scale-down"
        );
        assert_eq!(
            plan(&with_scale(3), &[]).unwrap(),
            [(Guard::QuotaCoversUsage, Checked::Passed)]
        );
        let low = plan(&with_scale(2), &[]).unwrap_err();
        assert_eq!(low.code(), "quota_covers_usage");
        assert!(low.to_string().contains("below the 3 pods"), "{low}");
        let without_scale = diagnosis(vec![quota(4)], evidence());
        assert!(
            plan(&without_scale, &[])
                .unwrap_err()
                .to_string()
                .contains("below the 9 pods"),
        );
        let no_evidence = diagnosis(vec![quota(4)], Vec::new());
        assert_eq!(
            plan(&no_evidence, &[]).unwrap(),
            [(Guard::QuotaCoversUsage, Checked::Deferred)]
        );
    }

    #[test]
    fn the_plan_rolls_back_only_to_a_different_known_good_image() {
        let rollback = |p: Value| proposal(ActionKind::RollbackImage, ISVC, p);
        let same = diagnosis(
            vec![rollback(
                json!({"image": "img:1", "failing_image": "img:1"}),
            )],
            Vec::new(),
        );
        assert_eq!(plan(&same, &[]).unwrap_err().code(), "image_changes");
        let not_good = diagnosis(
            vec![rollback(
                json!({"image": "img:0", "failing_image": "img:2"}),
            )],
            vec![model(
                "ev2",
                "llama",
                json!({"image": "img:2", "last_known_good_image": "img:1"}),
            )],
        );
        assert_eq!(plan(&not_good, &[]).unwrap_err().code(), "image_known_good");
        let good = diagnosis(
            vec![rollback(
                json!({"image": "img:1", "failing_image": "img:2"}),
            )],
            vec![model(
                "ev2",
                "llama",
                json!({"image": "img:2", "last_known_good_image": "img:1"}),
            )],
        );
        assert_eq!(
            plan(&good, &["image_changes", "image_known_good"]).unwrap(),
            [
                (Guard::ImageChanges, Checked::Passed),
                (Guard::ImageKnownGood, Checked::Passed)
            ]
        );
    }

    #[test]
    fn a_section_naming_an_unknown_or_foreign_check_is_refused() {
        let d = diagnosis(
            vec![proposal(
                ActionKind::PatchMemoryLimit,
                ISVC,
                json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
            )],
            Vec::new(),
        );
        let unknown = plan(&d, &["memory_not_lowered", "no_oom_in_an_hour"]).unwrap_err();
        assert_eq!(unknown.code(), "unknown_check");
        assert_eq!(
            unknown.to_string(),
            "the runbook section requires check \"no_oom_in_an_hour\" for patch_memory_limit, which the remediator does not implement for it (known: memory_not_lowered, memory_ceiling)"
        );
        let foreign = plan(&d, &["replica_floor"]).unwrap_err();
        assert_eq!(foreign.code(), "unknown_check", "{foreign}");
    }

    #[test]
    fn the_repository_runbooks_declare_every_check_and_the_schema_knows_them() {
        let library = opsmesh_runbooks::Library::built_in().unwrap();
        for runbook in library.runbooks() {
            for action in runbook.front.sections.iter().flat_map(|s| &s.actions) {
                known_checks(action.kind, action).unwrap();
                let mut declared: Vec<&str> = action.checks.iter().map(String::as_str).collect();
                let mut all: Vec<&str> = Guard::of(action.kind).map(Guard::code).collect();
                declared.sort_unstable();
                all.sort_unstable();
                assert_eq!(declared, all, "{} {}", runbook.front.id, action.kind);
            }
        }
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks/schema.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            schema["$defs"]["check"]["enum"],
            json!(Guard::ALL.map(Guard::code))
        );
    }

    /// A memory quantity in one of the units operators write.
    fn memory() -> impl Strategy<Value = String> {
        (
            1u64..200_000,
            prop::sample::select(vec!["", "Ki", "Mi", "Gi", "k", "M", "G"]),
        )
            .prop_map(|(n, unit)| format!("{n}{unit}"))
    }

    proptest! {
        #[test]
        fn the_memory_guard_never_lets_a_lower_or_equal_limit_through(
            new in memory(),
            current in memory(),
        ) {
            let generous = PolicyConfig { memory_ceiling: "1000000Ti".into(), ..policy() };
            let (n, c) = (parse_bytes(&new).unwrap(), parse_bytes(&current).unwrap());
            let executed = check_execute(
                &record(
                    ActionKind::PatchMemoryLimit,
                    ISVC,
                    json!({"memory_limit": new, "observed_memory_limit": current}),
                ),
                &generous,
            );
            prop_assert_eq!(executed.is_ok(), n > c, "{} over {}: {:?}", new, current, executed);
            let d = diagnosis(
                vec![proposal(
                    ActionKind::PatchMemoryLimit,
                    ISVC,
                    json!({"memory_limit": new, "previous_memory_limit": current}),
                )],
                Vec::new(),
            );
            let p = &d.recommended_actions[0];
            let planned = check_plan(
                p,
                &ISVC.parse::<Target>().unwrap(),
                &spec(p.kind, &[]),
                &d,
                &generous,
            );
            prop_assert_eq!(planned.is_ok(), n > c, "{} over {}: {:?}", new, current, planned);
        }
    }
}
