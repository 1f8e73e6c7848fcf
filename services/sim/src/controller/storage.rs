//! Model storage, as KServe wires it: a predictor with a storage URI gets the
//! `storage-initializer` init container (the URI as its first argument, the pod-template
//! annotation KServe sets) that downloads the model before `kserve-container` starts. A URI
//! that holds no model (the `model_load_failure` fault) makes the initializer exit 1 and
//! crash-loop: the pod stays `Pending` in `Init:CrashLoopBackOff`, readiness never comes, and
//! KServe reports `ModelLoadFailed`. Going back to a URI that holds the model fixes it.

use serde_json::{Value, json};

use opsmesh_proto::storage::{
    MODEL_CONTAINER, SOURCE_URI_ANNOTATION, STORAGE_INITIALIZER, STORAGE_URI_ENV, env_index,
};

use crate::{resources, scenario::Fault, world::World};

const INITIALIZER_IMAGE: &str = "kserve/storage-initializer:v0.14.1";
const MODEL_DIR: &str = "/mnt/models";
const PROVISION_VOLUME: &str = "kserve-provision-location";

/// What the storage initializer prints when the URI holds no model.
pub(super) fn fetch_error(uri: &str) -> String {
    format!("RuntimeError: Failed to fetch model. No model found in {uri}.")
}

/// Adds KServe's storage initializer to a predictor pod whose model-server container names a
/// storage URI (`STORAGE_URI`), as KServe's pod mutator does at admission.
pub(super) fn inject_initializer(container: &Value, pod: &mut Value) {
    let Some(uri) = env_index(container).and_then(|i| container["env"][i]["value"].as_str()) else {
        return;
    };
    pod["metadata"]["annotations"][SOURCE_URI_ANNOTATION] = json!(uri);
    pod["spec"]["initContainers"] = json!([{
        "name": STORAGE_INITIALIZER,
        "image": INITIALIZER_IMAGE,
        "args": [uri, MODEL_DIR],
        "volumeMounts": [{"name": PROVISION_VOLUME, "mountPath": MODEL_DIR}],
    }]);
    pod["spec"]["volumes"] = json!([{"name": PROVISION_VOLUME, "emptyDir": {}}]);
    if let Some(containers) = pod["spec"]["containers"].as_array_mut() {
        for c in containers
            .iter_mut()
            .filter(|c| c["name"] == MODEL_CONTAINER)
        {
            c["volumeMounts"] =
                json!([{"name": PROVISION_VOLUME, "mountPath": MODEL_DIR, "readOnly": true}]);
        }
    }
}

impl World {
    /// The fault: a rollout points the predictor at `uri`, which holds no model.
    pub(super) fn point_at_missing_model(&mut self, ns: &str, name: &str, uri: &str) {
        let Some(mut isvc) = self
            .get_obj(&resources::INFERENCE_SERVICES, ns, name)
            .cloned()
        else {
            return;
        };
        let predictor = &mut isvc["spec"]["predictor"];
        if predictor["model"].is_object() {
            predictor["model"]["storageUri"] = json!(uri);
        } else if let Some(containers) = predictor["containers"].as_array_mut()
            && let Some(c) = containers.iter_mut().find(|c| c["name"] == MODEL_CONTAINER)
        {
            match env_index(c) {
                Some(i) => c["env"][i]["value"] = json!(uri),
                None if c["env"].is_array() => {
                    if let Some(env) = c["env"].as_array_mut() {
                        env.push(json!({"name": STORAGE_URI_ENV, "value": uri}));
                    }
                }
                None => c["env"] = json!([{"name": STORAGE_URI_ENV, "value": uri}]),
            }
        }
        self.put(&resources::INFERENCE_SERVICES, ns, name, isvc);
    }

    /// The URI a pod's storage initializer fails on, when a `model_load_failure` covers it.
    pub(super) fn missing_model(&self, ns: &str, isvc: &str, pod: &Value) -> Option<String> {
        let uri = opsmesh_proto::storage::pod_storage_uri(pod)?;
        self.faults.iter().find_map(|f| match &f.fault {
            Fault::ModelLoadFailure { storage_uri }
                if f.applied && f.targets_isvc(ns, isvc) && storage_uri == uri =>
            {
                Some(uri.to_owned())
            }
            _ => None,
        })
    }
}

impl World {
    /// The storage initializer's status while it fails on `uri` since `since` (its kubelet
    /// `BackOff` event written); `c` is its restart loop.
    pub(super) fn initializer_failure(
        &mut self,
        (ns, pod, uid): (&str, &str, &str),
        since: std::time::Duration,
        c: &super::kubelet::Cycle,
        uri: &str,
    ) -> Value {
        let last_state = match c.last_crash {
            Some(crash) => json!({"terminated": {
                "reason": "Error",
                "exitCode": 1,
                "message": fetch_error(uri),
                "startedAt": self.ts(since + c.last_start),
                "finishedAt": self.ts(since + crash),
                "containerID": format!("containerd://{}-init", uid.replace('-', "")),
            }}),
            None => json!({}),
        };
        let state = match c.backoff {
            Some(b) => json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!(
                "back-off {} restarting failed container={STORAGE_INITIALIZER} pod={pod}_{ns}({uid})",
                crate::duration::format_duration(b)
            )}}),
            None => json!({"running": {"startedAt": self.ts(since + c.last_start)}}),
        };
        let involved = json!({"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": ns, "uid": uid, "fieldPath": format!("spec.initContainers{{{STORAGE_INITIALIZER}}}")});
        self.put_backoff_event((ns, pod, uid), STORAGE_INITIALIZER, involved, since, c);
        json!([{
            "name": STORAGE_INITIALIZER,
            "image": INITIALIZER_IMAGE,
            "imageID": format!("docker.io/{INITIALIZER_IMAGE}@sha256:{}", "1".repeat(64)),
            "ready": false,
            "started": state.get("running").is_some(),
            "restartCount": c.restarts,
            "state": state,
            "lastState": last_state,
        }])
    }
}
