//! Model storage evidence: the predictor's storage URI, the URI of the Deployment's previous
//! revision (from its ReplicaSets), and why the model does not load — KServe's
//! `modelStatus.lastFailureInfo`, else the storage initializer's own termination.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use opsmesh_proto::{storage, telemetry::ModelHealth};

/// Fills the storage fields of `health` from the InferenceService (as JSON), its predictor
/// pods and the namespace's ReplicaSets (as JSON).
pub fn observe(health: &mut ModelHealth, isvc: &Value, pods: &[&Pod], replica_sets: &[Value]) {
    let Some(uri) = storage::predictor_storage_uri(&isvc["spec"]["predictor"]) else {
        return;
    };
    health.previous_storage_uri = storage::previous_storage_uri(
        replica_sets
            .iter()
            .filter(|rs| rs["metadata"]["namespace"] == health.namespace.as_str()),
        &format!("{}-predictor", health.name),
        uri,
    );
    health.storage_uri = Some(uri.to_owned());
    let failure = &isvc["status"]["modelStatus"]["lastFailureInfo"];
    let from_kserve = (failure["reason"] == "ModelLoadFailed")
        .then(|| failure["message"].as_str())
        .flatten()
        .filter(|m| m.contains(storage::STORAGE_INITIALIZER));
    health.load_failure = from_kserve.map(str::to_owned).or_else(|| {
        pods.iter().find_map(|p| {
            let statuses = p.status.as_ref()?.init_container_statuses.as_ref()?;
            let init = statuses
                .iter()
                .find(|s| s.name == storage::STORAGE_INITIALIZER)?;
            let t = init.last_state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| {
                format!(
                    "{} exited with code {}: {}",
                    storage::STORAGE_INITIALIZER,
                    t.exit_code,
                    t.message.as_deref().unwrap_or("no message")
                )
            })
        })
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn isvc(uri: &str, status: Value) -> Value {
        json!({"spec": {"predictor": {"containers": [{"name": "kserve-container", "env": [{"name": "STORAGE_URI", "value": uri}]}]}}, "status": status})
    }

    fn rs(revision: u64, uri: &str) -> Value {
        json!({
            "metadata": {"namespace": "ns", "annotations": {"deployment.kubernetes.io/revision": revision.to_string()}, "ownerReferences": [{"kind": "Deployment", "name": "m-predictor"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "kserve-container", "env": [{"name": "STORAGE_URI", "value": uri}]}]}}},
        })
    }

    fn health() -> ModelHealth {
        ModelHealth {
            namespace: "ns".into(),
            name: "m".into(),
            ..ModelHealth::default()
        }
    }

    #[test]
    fn the_failing_initializer_and_the_previous_revision_are_evidence() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"initContainerStatuses": [{
                "name": "storage-initializer", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "RuntimeError: Failed to fetch model. No model found in gs://m/bad."}}
            }]}
        }))
        .unwrap();
        let mut h = health();
        observe(
            &mut h,
            &isvc("gs://m/bad", json!({})),
            &[&pod],
            &[rs(1, "gs://m/good"), rs(2, "gs://m/bad")],
        );
        assert_eq!(h.storage_uri.as_deref(), Some("gs://m/bad"));
        assert_eq!(h.previous_storage_uri.as_deref(), Some("gs://m/good"));
        assert_eq!(
            h.load_failure.as_deref(),
            Some(
                "storage-initializer exited with code 1: RuntimeError: Failed to fetch model. No model found in gs://m/bad."
            )
        );
    }

    #[test]
    fn kserve_failure_info_counts_only_for_the_storage_initializer() {
        let mut h = health();
        let status = |message: &str| json!({"modelStatus": {"lastFailureInfo": {"reason": "ModelLoadFailed", "message": message}}});
        observe(
            &mut h,
            &isvc(
                "gs://m/1",
                status("storage-initializer exited with code 1: no model"),
            ),
            &[],
            &[],
        );
        assert_eq!(
            h.load_failure.as_deref(),
            Some("storage-initializer exited with code 1: no model")
        );
        assert_eq!(h.previous_storage_uri, None);
        let mut h = health();
        observe(
            &mut h,
            &isvc("gs://m/1", status("container kserve-container OOMKilled")),
            &[],
            &[],
        );
        assert_eq!(h.load_failure, None, "an OOM is not a load failure");
    }
}
