//! `raise_max_replicas`: KServe's `spec.predictor.maxReplicas` (a merge patch), so an
//! autoscaler running the predictor at its bound may add pods. It only ever raises the bound;
//! the bound and the policy's ceiling are checked against the cluster just before the patch
//! ([`guards::check_execute`](crate::guards::check_execute)). The namespace's pod quota
//! headroom comes with the diagnosis (the collector reads the quotas; the remediator may read
//! only the quota it owns), and the API server's quota admission refuses pods beyond it anyway.

use serde_json::{Value, json};

use opsmesh_proto::remediation::ActionRecord;

use super::{ActError, Cluster, Health, Observed, health::is_ready, param_u64};

fn max_replicas(isvc: &Value) -> Option<u64> {
    isvc["spec"]["predictor"]["maxReplicas"].as_u64()
}

impl Cluster {
    pub(super) async fn observe_max_replicas(
        &self,
        a: &ActionRecord,
        out: &mut Observed,
    ) -> Result<(), ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        if let Some(max) = max_replicas(&isvc) {
            out.insert("observed_max_replicas".into(), json!(max));
        }
        Ok(())
    }

    pub(super) async fn max_replicas_is(&self, a: &ActionRecord) -> Result<bool, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        Ok(param_u64(a, "max_replicas").is_some()
            && max_replicas(&isvc) == param_u64(a, "max_replicas"))
    }

    /// Raises `maxReplicas` to the action's `max_replicas` (the guards checked it is a raise
    /// within the quota headroom and the policy's ceiling).
    pub(super) async fn raise_max_replicas(
        &self,
        a: &ActionRecord,
        dry_run: bool,
    ) -> Result<String, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let want = param_u64(a, "max_replicas")
            .ok_or_else(|| ActError::Refused("no max_replicas".into()))?;
        let now = param_u64(a, "observed_max_replicas").map_or("unset".into(), |n| n.to_string());
        let patch = json!({"spec": {"predictor": {"maxReplicas": want}}});
        self.merge_patch(&ns, &name, &patch, dry_run).await?;
        Ok(format!(
            "{}: maxReplicas of {ns}/{name} {now} → {want}",
            if dry_run { "dry run" } else { "applied" }
        ))
    }

    /// Puts back the bound recorded before the change.
    pub(super) async fn restore_max_replicas(&self, a: &ActionRecord) -> Result<String, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let previous = param_u64(a, "observed_max_replicas")
            .or_else(|| param_u64(a, "previous_max_replicas"))
            .ok_or_else(|| ActError::Refused("the previous maxReplicas is unknown".into()))?;
        let patch = json!({"spec": {"predictor": {"maxReplicas": previous}}});
        self.merge_patch(&ns, &name, &patch, true).await?;
        self.merge_patch(&ns, &name, &patch, false).await?;
        Ok(format!("maxReplicas of {ns}/{name} restored to {previous}"))
    }

    /// Healthy when the InferenceService is Ready with the new bound in place.
    pub(super) async fn max_replicas_health(&self, a: &ActionRecord) -> Result<Health, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        let ready = is_ready(&isvc);
        let bound = max_replicas(&isvc);
        let want = param_u64(a, "max_replicas");
        Ok(Health {
            healthy: ready && bound.is_some() && bound == want,
            detail: format!(
                "{ns}/{name}: Ready={}, maxReplicas {} (wanted {})",
                if ready { "True" } else { "False" },
                bound.map_or("unset".into(), |b| b.to_string()),
                want.map_or("unknown".into(), |w| w.to_string()),
            ),
            ready_containers: None,
        })
    }
}
