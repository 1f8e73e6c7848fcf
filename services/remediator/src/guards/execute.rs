//! The execute stage: every guard of an action against the values the cluster showed just
//! before it runs (the authoritative check).

use serde_json::Value;

use opsmesh_proto::{ActionKind, remediation::ActionRecord};

use crate::config::PolicyConfig;

use super::{
    Guard, GuardViolation,
    rules::{
        above_floor, below_ceiling, count_param, max_replicas_raise_fits, new_max_replicas,
        not_lowered, quantity, required, within_blast_radius,
    },
};

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
        ActionKind::RaiseMaxReplicas => {
            let new = new_max_replicas(params, policy)?;
            let guard = Guard::MaxReplicasRaised;
            let current = required(
                count_param(params, "observed_max_replicas", guard)?,
                guard,
                "the InferenceService's maxReplicas was not observed",
            )?;
            let headroom =
                count_param(params, "pod_quota_headroom", Guard::MaxReplicasWithinQuota)?;
            max_replicas_raise_fits(new, current, headroom)
        }
        ActionKind::RestartInferenceService
        | ActionKind::RollbackStorageUri
        | ActionKind::SetCanaryTraffic
        | ActionKind::ArgocdSync
        | ActionKind::AdviseCapacity
        | ActionKind::SuggestPolicyFix
        | ActionKind::Escalate => Ok(()),
    }
}
