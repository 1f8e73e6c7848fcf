//! Machine-checked runbook guards. A runbook's `guards:` are sentences for humans; the ones a
//! machine can decide from numbers are checked here, twice: when the action is planned (from
//! the diagnosis' params and evidence, and the policy), and again just before it runs (from the
//! values [`Cluster::observe`](crate::cluster::Cluster::observe) read from the cluster at that
//! moment). The diagnosis can be stale or wrong — it may not know the current memory limit at
//! all — so only the second check is authoritative; the first refuses early what is already
//! visibly wrong. A violation names its guard by a stable code, which is also the refusal's
//! metrics label and the name a runbook's `checks:` list uses.

//!
//! This module holds the guards and their violations; the shared rules, the plan stage and
//! the execute stage each have a submodule.

mod execute;
mod plan;
mod rules;
#[cfg(test)]
mod tests;

use opsmesh_proto::ActionKind;

pub use execute::check_execute;
pub use plan::{check_plan, known_checks};

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
    /// `raise_max_replicas`: the new bound is above the current `maxReplicas`.
    MaxReplicasRaised,
    /// `raise_max_replicas`: the new bound is at or below the policy's `max_replicas_ceiling`.
    MaxReplicasCeiling,
    /// `raise_max_replicas`: the pods it may add fit the namespace's pod quota headroom.
    MaxReplicasWithinQuota,
}

impl Guard {
    pub const ALL: [Guard; 10] = [
        Guard::MemoryNotLowered,
        Guard::MemoryCeiling,
        Guard::ReplicaFloor,
        Guard::BlastRadius,
        Guard::QuotaCoversUsage,
        Guard::ImageChanges,
        Guard::ImageKnownGood,
        Guard::MaxReplicasRaised,
        Guard::MaxReplicasCeiling,
        Guard::MaxReplicasWithinQuota,
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
            Guard::MaxReplicasRaised => "max_replicas_raised",
            Guard::MaxReplicasCeiling => "max_replicas_ceiling",
            Guard::MaxReplicasWithinQuota => "max_replicas_within_quota",
        }
    }

    /// The action the guard is about.
    pub fn kind(self) -> ActionKind {
        match self {
            Guard::MemoryNotLowered | Guard::MemoryCeiling => ActionKind::PatchMemoryLimit,
            Guard::ReplicaFloor | Guard::BlastRadius => ActionKind::ScaleInferenceService,
            Guard::QuotaCoversUsage => ActionKind::ApplyResourceQuota,
            Guard::ImageChanges | Guard::ImageKnownGood => ActionKind::RollbackImage,
            Guard::MaxReplicasRaised
            | Guard::MaxReplicasCeiling
            | Guard::MaxReplicasWithinQuota => ActionKind::RaiseMaxReplicas,
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
    #[error("maxReplicas {new} is not above the current {current}")]
    MaxReplicasNotRaised { new: u64, current: u64 },
    #[error("maxReplicas {new} is above the policy's max_replicas_ceiling {ceiling}")]
    MaxReplicasAboveCeiling { new: u64, ceiling: u32 },
    #[error(
        "maxReplicas {current} → {new} may add {} pods; the namespace's pod quota admits {headroom} more",
        new - current
    )]
    MaxReplicasAboveQuota {
        new: u64,
        current: u64,
        headroom: u64,
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
            Self::MaxReplicasNotRaised { .. } => Guard::MaxReplicasRaised,
            Self::MaxReplicasAboveCeiling { .. } => Guard::MaxReplicasCeiling,
            Self::MaxReplicasAboveQuota { .. } => Guard::MaxReplicasWithinQuota,
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
