//! The namespace guard: the ResourceQuota and LimitRange opsmesh applies (server-side apply)
//! and the pods a pod quota must leave room for.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{
    ActError, Cluster, LIMIT_RANGE_NAME, QUOTA_NAME, inference_service::ISVC_LABEL, kube_error,
};

impl Cluster {
    fn apply_params(&self, dry_run: bool) -> PatchParams {
        let mut p = PatchParams::apply(&self.field_manager).force();
        p.dry_run = dry_run;
        p
    }

    pub(super) async fn apply_quota(
        &self,
        ns: &str,
        hard: Option<Value>,
        dry_run: bool,
    ) -> Result<(), ActError> {
        let body = json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "opsmesh"}},
            "spec": {"hard": hard.unwrap_or_else(|| json!({}))},
        });
        Api::<ResourceQuota>::namespaced(self.client()?.clone(), ns)
            .patch(
                QUOTA_NAME,
                &self.apply_params(dry_run),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| kube_error(&format!("apply resourcequota {ns}/{QUOTA_NAME}"), e))?;
        Ok(())
    }

    pub(super) async fn apply_limit_range(
        &self,
        ns: &str,
        limits: Option<Value>,
        dry_run: bool,
    ) -> Result<(), ActError> {
        let body = json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": LIMIT_RANGE_NAME, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "opsmesh"}},
            "spec": {"limits": limits.unwrap_or_else(|| json!([]))},
        });
        Api::<LimitRange>::namespaced(self.client()?.clone(), ns)
            .patch(
                LIMIT_RANGE_NAME,
                &self.apply_params(dry_run),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| kube_error(&format!("apply limitrange {ns}/{LIMIT_RANGE_NAME}"), e))?;
        Ok(())
    }
}

/// The pods a namespace settles at under its current specs, as a pod quota counts them: pods
/// not finished (`Succeeded`, `Failed`) and not being deleted, with an InferenceService's
/// predictor pods counted up to its `maxReplicas` at most. Observed right after a scale-down,
/// the pods above the new maximum are still on their way out; counting them would refuse a
/// quota sized for the namespace after the scale-down.
pub(super) fn settled_pods(pods: &[Pod], max_replicas: &BTreeMap<String, u64>) -> u64 {
    let mut per_isvc: BTreeMap<&str, u64> = BTreeMap::new();
    let mut other = 0;
    for pod in pods {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if finished || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pod.metadata.labels.as_ref().and_then(|l| l.get(ISVC_LABEL)) {
            Some(isvc) => *per_isvc.entry(isvc).or_default() += 1,
            None => other += 1,
        }
    }
    other
        + per_isvc
            .into_iter()
            .map(|(isvc, n)| max_replicas.get(isvc).map_or(n, |max| n.min(*max)))
            .sum::<u64>()
}

pub(super) fn default_limits() -> Value {
    json!([{"type": "Container", "default": {"memory": "1Gi"}, "defaultRequest": {"memory": "512Mi"}}])
}
