//! KServe canary rollouts: with `spec.predictor.canaryTrafficPercent` set, a new predictor
//! revision takes that share of the traffic and the last revision rolled out to 100 % keeps
//! the rest, as `status.components.predictor.traffic` reports (tags `latest` and `prev`).
//! Without it, or once the latest revision took all the traffic, the latest revision is rolled
//! out. The percentage routes traffic only: it is not part of the pod template, so changing it
//! makes no new revision.

use serde_json::{Value, json};

use crate::{resources, world::World};

/// Fills the predictor's traffic fields of `components` for `revision`, from the
/// InferenceService's spec and its previous status `old`.
pub(super) fn route_traffic(
    isvc: &Value,
    old: &Value,
    components: &mut Value,
    revision: &str,
    ready: bool,
) {
    let before = &old["components"]["predictor"];
    let rolled_out = before["latestRolledoutRevision"].as_str();
    let canary = isvc["spec"]["predictor"]["canaryTrafficPercent"]
        .as_u64()
        .filter(|p| *p < 100);
    let predictor = &mut components["predictor"];
    match (canary, rolled_out) {
        (Some(percent), Some(stable)) if stable != revision => {
            predictor["traffic"] = json!([
                {"tag": "latest", "revisionName": revision, "percent": percent, "latestRevision": true},
                {"tag": "prev", "revisionName": stable, "percent": 100 - percent, "latestRevision": false},
            ]);
            predictor["latestRolledoutRevision"] = json!(stable);
            if let Some(previous) = before.get("previousRolledoutRevision") {
                predictor["previousRolledoutRevision"] = previous.clone();
            }
        }
        _ if ready => {
            predictor["traffic"] = json!([
                {"revisionName": revision, "percent": 100, "latestRevision": true},
            ]);
            predictor["latestRolledoutRevision"] = json!(revision);
            match rolled_out {
                Some(stable) if stable != revision => {
                    predictor["previousRolledoutRevision"] = json!(stable);
                }
                _ => {
                    if let Some(previous) = before.get("previousRolledoutRevision") {
                        predictor["previousRolledoutRevision"] = previous.clone();
                    }
                }
            }
        }
        _ => {
            for field in [
                "traffic",
                "latestRolledoutRevision",
                "previousRolledoutRevision",
            ] {
                if let Some(v) = before.get(field) {
                    predictor[field] = v.clone();
                }
            }
        }
    }
}

impl World {
    /// The canary fault: a new image rolled out as a canary taking `percent` of the traffic.
    pub(super) fn start_canary(&mut self, ns: &str, name: &str, image: &str, percent: u32) {
        let Some(mut isvc) = self
            .get_obj(&resources::INFERENCE_SERVICES, ns, name)
            .cloned()
        else {
            return;
        };
        let predictor = &mut isvc["spec"]["predictor"];
        predictor["canaryTrafficPercent"] = json!(percent);
        if let Some(containers) = predictor["containers"].as_array_mut()
            && let Some(c) = containers
                .iter_mut()
                .find(|c| c["name"] == opsmesh_proto::storage::MODEL_CONTAINER)
        {
            c["image"] = json!(image);
        }
        self.put(&resources::INFERENCE_SERVICES, ns, name, isvc);
    }
}
