//! The InferenceService: reading it and its revision history (KServe raw-deployment mode: the
//! predictor Deployment's ReplicaSets), patching it (JSON patch for a container's fields,
//! merge patch for replicas and the pod template's annotations), and the patches the actions
//! send.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use opsmesh_proto::{Target, remediation::ActionRecord, revisions};

use super::{ActError, Cluster, kube_error};

pub(super) const ISVC_LABEL: &str = "serving.kserve.io/inferenceservice";
const CONTAINER: &str = "kserve-container";
/// What `kubectl rollout restart` writes on a pod template (RFC 3339); KServe carries the
/// predictor's `annotations` to its pods, so a new value rolls them.
pub(super) const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

fn isvc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    )
}

impl Cluster {
    pub(super) fn isvc_api(&self, ns: &str) -> Result<Api<DynamicObject>, ActError> {
        Ok(Api::namespaced_with(
            self.client()?.clone(),
            ns,
            &isvc_resource(),
        ))
    }

    fn params(&self, dry_run: bool) -> PatchParams {
        PatchParams {
            dry_run,
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        }
    }

    pub(super) async fn get_isvc(&self, ns: &str, name: &str) -> Result<Value, ActError> {
        let obj = self
            .isvc_api(ns)?
            .get(name)
            .await
            .map_err(|e| kube_error(&format!("get inferenceservice {ns}/{name}"), e))?;
        serde_json::to_value(obj).map_err(|e| ActError::Refused(e.to_string()))
    }

    /// The image the predictor ran before its current one: that of the newest older revision
    /// of its Deployment (`<name>-predictor`) with another image. `None` without one.
    pub(super) async fn previous_image(
        &self,
        ns: &str,
        name: &str,
        isvc: &Value,
    ) -> Result<Option<String>, ActError> {
        let Some(current) = container_of(isvc).1.and_then(|c| c["image"].as_str()) else {
            return Ok(None);
        };
        let sets = self.replica_sets(ns, name).await?;
        Ok(revisions::previous_image(
            &sets,
            &format!("{name}-predictor"),
            CONTAINER,
            current,
        ))
    }

    /// The ReplicaSets of the predictor's Deployment (its revision history), as JSON.
    pub(super) async fn replica_sets(&self, ns: &str, name: &str) -> Result<Vec<Value>, ActError> {
        let sets = Api::<ReplicaSet>::namespaced(self.client()?.clone(), ns)
            .list(&ListParams::default().labels(&format!("{ISVC_LABEL}={name}")))
            .await
            .map_err(|e| kube_error(&format!("list replicasets of {ns}/{name}"), e))?;
        Ok(sets
            .items
            .iter()
            .filter_map(|rs| serde_json::to_value(rs).ok())
            .collect())
    }

    pub(super) fn isvc_target(a: &ActionRecord) -> Result<(String, String), ActError> {
        match a
            .target
            .parse::<Target>()
            .map_err(|e| ActError::Refused(e.to_string()))?
        {
            Target::InferenceService { namespace, name } => Ok((namespace, name)),
            other => Err(ActError::Refused(format!(
                "{} needs an InferenceService target, not {other}",
                a.kind
            ))),
        }
    }

    pub(super) async fn json_patch(
        &self,
        ns: &str,
        name: &str,
        ops: Value,
        dry_run: bool,
    ) -> Result<(), ActError> {
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(|e| ActError::Refused(e.to_string()))?;
        self.isvc_api(ns)?
            .patch(name, &self.params(dry_run), &Patch::Json::<()>(patch))
            .await
            .map_err(|e| kube_error(&format!("patch inferenceservice {ns}/{name}"), e))?;
        Ok(())
    }

    pub(super) async fn merge_patch(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<(), ActError> {
        self.isvc_api(ns)?
            .patch(name, &self.params(dry_run), &Patch::Merge(patch))
            .await
            .map_err(|e| kube_error(&format!("patch inferenceservice {ns}/{name}"), e))?;
        Ok(())
    }
}

/// The predictor's model-server container (`kserve-container`, else the first) and its index.
pub(super) fn container_of(isvc: &Value) -> (usize, Option<&Value>) {
    let containers = isvc["spec"]["predictor"]["containers"].as_array();
    let Some(list) = containers else {
        return (0, None);
    };
    match list.iter().position(|c| c["name"] == CONTAINER) {
        Some(i) => (i, list.get(i)),
        None => (0, list.first()),
    }
}

/// A JSON patch setting the model-server container's memory limit (containers form), or the
/// model's (model form); the `test` op pins the container it meant.
pub(super) fn memory_patch(isvc: &Value, limit: &str) -> Result<Value, ActError> {
    let (index, container) = container_of(isvc);
    if let Some(c) = container {
        let base = format!("/spec/predictor/containers/{index}");
        let mut ops =
            vec![json!({"op": "test", "path": format!("{base}/name"), "value": c["name"]})];
        if c.get("resources").is_none_or(Value::is_null) {
            ops.push(json!({"op": "add", "path": format!("{base}/resources"), "value": {"limits": {"memory": limit}}}));
        } else if c["resources"].get("limits").is_none_or(Value::is_null) {
            ops.push(json!({"op": "add", "path": format!("{base}/resources/limits"), "value": {"memory": limit}}));
        } else {
            ops.push(json!({"op": "add", "path": format!("{base}/resources/limits/memory"), "value": limit}));
        }
        return Ok(Value::Array(ops));
    }
    let model = &isvc["spec"]["predictor"]["model"];
    if model.is_null() {
        return Err(ActError::Refused(
            "the InferenceService has neither predictor containers nor a model".into(),
        ));
    }
    let base = "/spec/predictor/model";
    let op = if model.get("resources").is_none_or(Value::is_null) {
        json!({"op": "add", "path": format!("{base}/resources"), "value": {"limits": {"memory": limit}}})
    } else if model["resources"].get("limits").is_none_or(Value::is_null) {
        json!({"op": "add", "path": format!("{base}/resources/limits"), "value": {"memory": limit}})
    } else {
        json!({"op": "add", "path": format!("{base}/resources/limits/memory"), "value": limit})
    };
    Ok(json!([op]))
}

/// Absolute replica counts: minReplicas, and maxReplicas when it would exceed them (or its
/// recorded value on rollback).
pub(super) fn scale_patch(isvc: &Value, replicas: u64, max: Option<u64>) -> Value {
    let mut predictor = json!({"minReplicas": replicas});
    match (max, isvc["spec"]["predictor"]["maxReplicas"].as_u64()) {
        (Some(m), _) => predictor["maxReplicas"] = json!(m),
        (None, Some(m)) if m > replicas => predictor["maxReplicas"] = json!(replicas),
        _ => {}
    }
    json!({"spec": {"predictor": predictor}})
}

/// `kubectl rollout restart` on the predictor: its pod template's restart stamp.
pub(super) fn restart_patch(at: &str) -> Value {
    json!({"spec": {"predictor": {"annotations": {RESTARTED_AT: at}}}})
}

/// The predictor pod template's restart stamp, if any.
pub(super) fn restarted_at(isvc: &Value) -> Option<&str> {
    isvc["spec"]["predictor"]["annotations"][RESTARTED_AT].as_str()
}
