//! `set_canary_traffic`: KServe's `spec.predictor.canaryTrafficPercent` (a merge patch), so a
//! canary revision that fails more requests than the stable one takes no more traffic. It only
//! ever lowers the canary's share; the health check reads the split KServe reports.

use serde_json::Value;

use opsmesh_proto::remediation::ActionRecord;

use super::{
    ActError, Cluster, Health, Observed, health::is_ready, param_u64,
    predictor_count::PredictorCount,
};

const CANARY_TRAFFIC: PredictorCount = PredictorCount {
    field: "canaryTrafficPercent",
    param: "traffic_percent",
    observed: "observed_canary_traffic_percent",
    previous: "previous_traffic_percent",
};

/// The latest revision's share of the traffic, as `status.components.predictor.traffic`
/// reports it.
fn latest_share(isvc: &Value) -> Option<u64> {
    isvc["status"]["components"]["predictor"]["traffic"]
        .as_array()?
        .iter()
        .find(|t| t["latestRevision"] == true)?["percent"]
        .as_u64()
}

impl Cluster {
    pub(super) async fn observe_canary(
        &self,
        a: &ActionRecord,
        out: &mut Observed,
    ) -> Result<(), ActError> {
        self.observe_count(a, &CANARY_TRAFFIC, out).await.map(drop)
    }

    pub(super) async fn canary_traffic_is(&self, a: &ActionRecord) -> Result<bool, ActError> {
        self.count_is(a, &CANARY_TRAFFIC).await
    }

    /// Lowers the canary's share to the action's `traffic_percent`; refuses to raise it, and
    /// refuses on an InferenceService without a canary rollout.
    pub(super) async fn set_canary_traffic(
        &self,
        a: &ActionRecord,
        dry_run: bool,
    ) -> Result<String, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let want = param_u64(a, CANARY_TRAFFIC.param)
            .filter(|p| *p <= 100)
            .ok_or_else(|| ActError::Refused("no traffic_percent from 0 to 100".into()))?;
        let isvc = self.get_isvc(&ns, &name).await?;
        let now = CANARY_TRAFFIC.of(&isvc).ok_or_else(|| {
            ActError::Refused(format!(
                "{ns}/{name} has no canaryTrafficPercent: no canary rollout"
            ))
        })?;
        if want > now {
            return Err(ActError::Refused(format!(
                "{ns}/{name}: canary traffic {now}% would rise to {want}%; only lowering is allowed"
            )));
        }
        self.set_count((&ns, &name), &CANARY_TRAFFIC, want, dry_run)
            .await?;
        Ok(format!(
            "{}: canaryTrafficPercent of {ns}/{name} {now} → {want}",
            if dry_run { "dry run" } else { "applied" }
        ))
    }

    /// Puts back the share recorded before the change.
    pub(super) async fn restore_canary_traffic(
        &self,
        a: &ActionRecord,
    ) -> Result<String, ActError> {
        self.restore_count(a, &CANARY_TRAFFIC).await
    }

    /// Healthy when KServe routes the latest revision the share asked for and the
    /// InferenceService is Ready.
    pub(super) async fn canary_health(&self, a: &ActionRecord) -> Result<Health, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        let ready = is_ready(&isvc);
        let share = latest_share(&isvc);
        let want = param_u64(a, CANARY_TRAFFIC.param);
        Ok(Health {
            healthy: ready && share.is_some() && share == want,
            detail: format!(
                "{ns}/{name}: Ready={}, latest revision takes {} of the traffic (wanted {})",
                if ready { "True" } else { "False" },
                share.map_or("unknown".into(), |s| format!("{s}%")),
                want.map_or("unknown".into(), |w| format!("{w}%")),
            ),
            ready_containers: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_latest_revision_share_comes_from_the_traffic_status() {
        let isvc = json!({"status": {"components": {"predictor": {"traffic": [
            {"revisionName": "m-2", "percent": 0, "latestRevision": true},
            {"revisionName": "m-1", "percent": 100, "latestRevision": false},
        ]}}}});
        assert_eq!(latest_share(&isvc), Some(0));
        assert_eq!(latest_share(&json!({})), None);
    }
}
