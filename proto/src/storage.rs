//! Where a KServe predictor loads its model from, as KServe reads it: the model's
//! `storageUri`, or the `STORAGE_URI` env of a custom `kserve-container`; in a pod (or a
//! ReplicaSet's pod template) the storage initializer KServe injects says it too. The
//! collector, the remediator and the simulator read it through these functions alike.

use serde_json::Value;

/// The env variable that makes KServe load a custom container's model.
pub const STORAGE_URI_ENV: &str = "STORAGE_URI";
/// The init container KServe injects to download the model.
pub const STORAGE_INITIALIZER: &str = "storage-initializer";
/// KServe's model-server container.
pub const MODEL_CONTAINER: &str = "kserve-container";
/// The pod-template annotation KServe sets for the storage initializer.
pub const SOURCE_URI_ANNOTATION: &str = "internal.serving.kserve.io/storage-initializer-sourceuri";

/// The `kserve-container` of a container list (else the first) and its index.
pub fn model_container(containers: &Value) -> Option<(usize, &Value)> {
    let list = containers.as_array()?;
    list.iter()
        .position(|c| c["name"] == MODEL_CONTAINER)
        .or((!list.is_empty()).then_some(0))
        .map(|i| (i, &list[i]))
}

/// Index of the `STORAGE_URI` env entry of a container.
pub fn env_index(container: &Value) -> Option<usize> {
    container["env"]
        .as_array()?
        .iter()
        .position(|e| e["name"] == STORAGE_URI_ENV)
}

/// The storage URI of an InferenceService's `spec.predictor`.
pub fn predictor_storage_uri(predictor: &Value) -> Option<&str> {
    if let Some(uri) = predictor["model"]["storageUri"].as_str() {
        return Some(uri);
    }
    let (_, c) = model_container(&predictor["containers"])?;
    c["env"][env_index(c)?]["value"].as_str()
}

/// The storage URI of a pod template (`spec.template` of a ReplicaSet) or a pod: KServe's
/// annotation, the storage initializer's first argument, or the container's env.
pub fn pod_storage_uri(pod: &Value) -> Option<&str> {
    if let Some(uri) = pod["metadata"]["annotations"][SOURCE_URI_ANNOTATION].as_str() {
        return Some(uri);
    }
    let init = pod["spec"]["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == STORAGE_INITIALIZER));
    if let Some(uri) = init.and_then(|c| c["args"][0].as_str()) {
        return Some(uri);
    }
    let (_, c) = model_container(&pod["spec"]["containers"])?;
    c["env"][env_index(c)?]["value"].as_str()
}

/// The storage URI of the newest revision of `deployment` (ReplicaSets as JSON, annotation
/// `deployment.kubernetes.io/revision`) that loaded from another URI than `current`: what a
/// rollback goes back to. `None` without such a revision.
pub fn previous_storage_uri<'a>(
    replica_sets: impl IntoIterator<Item = &'a Value>,
    deployment: &str,
    current: &str,
) -> Option<String> {
    crate::revisions::previous_value(replica_sets, deployment, current, |rs| {
        pod_storage_uri(&rs["spec"]["template"])
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rs(owner: &str, revision: u64, uri: &str) -> Value {
        json!({
            "metadata": {
                "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
                "ownerReferences": [{"kind": "Deployment", "name": owner}],
            },
            "spec": {"template": {"spec": {"containers": [
                {"name": "kserve-container", "env": [{"name": "X", "value": "y"}, {"name": STORAGE_URI_ENV, "value": uri}]},
            ]}}},
        })
    }

    #[test]
    fn the_predictor_names_its_uri_in_the_model_or_the_container_env() {
        let model = json!({"model": {"storageUri": "gs://m/1"}});
        assert_eq!(predictor_storage_uri(&model), Some("gs://m/1"));
        let custom = json!({"containers": [{"name": "sidecar"}, {"name": "kserve-container", "env": [{"name": STORAGE_URI_ENV, "value": "s3://m/2"}]}]});
        assert_eq!(predictor_storage_uri(&custom), Some("s3://m/2"));
        assert_eq!(
            predictor_storage_uri(&json!({"containers": [{"name": "kserve-container"}]})),
            None
        );
        let injected = json!({"spec": {"initContainers": [{"name": STORAGE_INITIALIZER, "args": ["pvc://m/3", "/mnt/models"]}], "containers": []}});
        assert_eq!(pod_storage_uri(&injected), Some("pvc://m/3"));
    }

    #[test]
    fn the_previous_uri_is_the_newest_older_revision_with_another() {
        let sets = [
            rs("m-predictor", 1, "gs://m/1"),
            rs("m-predictor", 2, "gs://m/2"),
            rs("m-predictor", 3, "gs://m/bad"),
            // A restart: same URI, newer revision.
            rs("m-predictor", 4, "gs://m/bad"),
            rs("other-predictor", 9, "gs://o/1"),
        ];
        assert_eq!(
            previous_storage_uri(&sets, "m-predictor", "gs://m/bad").as_deref(),
            Some("gs://m/2")
        );
        assert_eq!(
            previous_storage_uri(&sets[..1], "m-predictor", "gs://m/1"),
            None
        );
        assert_eq!(
            previous_storage_uri(&sets, "x-predictor", "gs://m/bad"),
            None
        );
    }
}
