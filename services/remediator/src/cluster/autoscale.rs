//! `raise_max_replicas`: KServe's `spec.predictor.maxReplicas` (a merge patch), so an
//! autoscaler running the predictor at its bound may add pods. It only ever raises the bound;
//! the bound and the policy's ceiling are checked against the cluster just before the patch
//! ([`guards::check_execute`](crate::guards::check_execute)). The namespace's pod quota
//! headroom comes with the diagnosis (the collector reads the quotas; the remediator may read
//! only the quota it owns), and the API server's quota admission refuses pods beyond it anyway.

use opsmesh_proto::remediation::ActionRecord;

use super::{
    ActError, Cluster, Health, Observed, health::is_ready, param_u64,
    predictor_count::PredictorCount,
};

const MAX_REPLICAS: PredictorCount = PredictorCount {
    field: "maxReplicas",
    param: "max_replicas",
    observed: "observed_max_replicas",
    previous: "previous_max_replicas",
};

impl Cluster {
    pub(super) async fn observe_max_replicas(
        &self,
        a: &ActionRecord,
        out: &mut Observed,
    ) -> Result<(), ActError> {
        self.observe_count(a, &MAX_REPLICAS, out).await.map(drop)
    }

    pub(super) async fn max_replicas_is(&self, a: &ActionRecord) -> Result<bool, ActError> {
        self.count_is(a, &MAX_REPLICAS).await
    }

    /// Raises `maxReplicas` to the action's `max_replicas` (the guards checked it is a raise
    /// within the quota headroom and the policy's ceiling).
    pub(super) async fn raise_max_replicas(
        &self,
        a: &ActionRecord,
        dry_run: bool,
    ) -> Result<String, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let want = param_u64(a, MAX_REPLICAS.param)
            .ok_or_else(|| ActError::Refused("no max_replicas".into()))?;
        let now = param_u64(a, MAX_REPLICAS.observed).map_or("unset".into(), |n| n.to_string());
        self.set_count((&ns, &name), &MAX_REPLICAS, want, dry_run)
            .await?;
        Ok(format!(
            "{}: maxReplicas of {ns}/{name} {now} → {want}",
            if dry_run { "dry run" } else { "applied" }
        ))
    }

    pub(super) async fn restore_max_replicas(&self, a: &ActionRecord) -> Result<String, ActError> {
        self.restore_count(a, &MAX_REPLICAS).await
    }

    /// Healthy when the InferenceService is Ready with the new bound in place.
    pub(super) async fn max_replicas_health(&self, a: &ActionRecord) -> Result<Health, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        let ready = is_ready(&isvc);
        let bound = MAX_REPLICAS.of(&isvc);
        let want = param_u64(a, MAX_REPLICAS.param);
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
