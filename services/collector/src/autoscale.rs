//! Autoscaler evidence: the predictor's `maxReplicas` and how many more pods the namespace's
//! ResourceQuotas admit, so a diagnosis can tell whether raising the bound fits.

use k8s_openapi::{api::core::v1::ResourceQuota, apimachinery::pkg::api::resource::Quantity};
use serde_json::Value;

use opsmesh_proto::telemetry::ModelHealth;

/// `quotas` are the ResourceQuotas of the InferenceService's namespace.
pub fn observe(health: &mut ModelHealth, isvc: &Value, quotas: &[&ResourceQuota]) {
    health.max_replicas = isvc["spec"]["predictor"]["maxReplicas"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok());
    health.pod_quota_headroom = pod_headroom(quotas);
}

fn pods(amounts: Option<&std::collections::BTreeMap<String, Quantity>>) -> Option<u32> {
    amounts?.get("pods")?.0.parse().ok()
}

/// The tightest quota's `hard.pods - used.pods` (from the quota controller's status); `None`
/// when no quota bounds pods.
fn pod_headroom(quotas: &[&ResourceQuota]) -> Option<u32> {
    quotas
        .iter()
        .filter_map(|q| {
            let status = q.status.as_ref();
            let hard = pods(status.and_then(|s| s.hard.as_ref()))
                .or_else(|| pods(q.spec.as_ref().and_then(|s| s.hard.as_ref())))?;
            let used = pods(status.and_then(|s| s.used.as_ref())).unwrap_or(0);
            Some(hard.saturating_sub(used))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn quota(hard: Option<&str>, used: Option<&str>) -> ResourceQuota {
        serde_json::from_value(json!({
            "metadata": {"name": "q", "namespace": "ml"},
            "spec": {"hard": hard.map(|h| json!({"pods": h}))},
            "status": {
                "hard": hard.map(|h| json!({"pods": h})),
                "used": used.map(|u| json!({"pods": u})),
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_tightest_pod_quota_bounds_the_headroom() {
        let (wide, tight) = (quota(Some("10"), Some("4")), quota(Some("6"), Some("4")));
        let mut h = ModelHealth::default();
        observe(
            &mut h,
            &json!({"spec": {"predictor": {"maxReplicas": 4}}}),
            &[&wide, &tight],
        );
        assert_eq!((h.max_replicas, h.pod_quota_headroom), (Some(4), Some(2)));
        assert_eq!(pod_headroom(&[&quota(Some("3"), Some("5"))]), Some(0));
        assert_eq!(pod_headroom(&[&quota(None, None)]), None);
        assert_eq!(pod_headroom(&[]), None);
    }
}
