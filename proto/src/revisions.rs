//! A Deployment's revision history, as Kubernetes keeps it: one ReplicaSet per pod-template
//! revision (annotation `deployment.kubernetes.io/revision`, owned by the Deployment), the
//! older ones scaled to zero. `kubectl rollout undo` reads it, and so do the collector and the
//! remediator for the image a workload ran before its current one.

use serde_json::Value;

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// A ReplicaSet's revision number.
pub fn revision(rs: &Value) -> Option<u64> {
    rs["metadata"]["annotations"][REVISION_ANNOTATION]
        .as_str()?
        .parse()
        .ok()
}

/// Whether a ReplicaSet belongs to the Deployment `deployment`.
pub fn owned_by(rs: &Value, deployment: &str) -> bool {
    rs["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["kind"] == "Deployment" && o["name"] == deployment)
}

/// The image of `container` (else the first container) in a ReplicaSet's pod template.
fn image_of<'a>(rs: &'a Value, container: &str) -> Option<&'a str> {
    let containers = rs["spec"]["template"]["spec"]["containers"].as_array()?;
    containers
        .iter()
        .find(|c| c["name"] == container)
        .or_else(|| containers.first())?["image"]
        .as_str()
}

/// The image of the newest revision of `deployment` that ran another image than
/// `current_image`: what a rollback goes back to. `None` without such a revision (a first
/// deployment, or history pruned by `revisionHistoryLimit`). `replica_sets` are ReplicaSet
/// objects as JSON; those of other owners are ignored.
pub fn previous_image<'a>(
    replica_sets: impl IntoIterator<Item = &'a Value>,
    deployment: &str,
    container: &str,
    current_image: &str,
) -> Option<String> {
    previous_value(replica_sets, deployment, current_image, |rs| {
        image_of(rs, container)
    })
}

/// What `value_of` reads from the newest revision of `deployment` whose value differs from
/// `current` (ReplicaSets as JSON; those of other owners and those without the value are
/// ignored).
pub fn previous_value<'a>(
    replica_sets: impl IntoIterator<Item = &'a Value>,
    deployment: &str,
    current: &str,
    value_of: impl Fn(&'a Value) -> Option<&'a str>,
) -> Option<String> {
    replica_sets
        .into_iter()
        .filter(|rs| owned_by(rs, deployment))
        .filter_map(|rs| Some((revision(rs)?, value_of(rs)?)))
        .filter(|(_, value)| *value != current)
        .max_by_key(|(revision, _)| *revision)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rs(owner: &str, revision: u64, image: &str) -> Value {
        json!({
            "metadata": {
                "annotations": {REVISION_ANNOTATION: revision.to_string()},
                "ownerReferences": [{"kind": "Deployment", "name": owner}],
            },
            "spec": {"template": {"spec": {"containers": [
                {"name": "storage-initializer", "image": "init:1"},
                {"name": "kserve-container", "image": image},
            ]}}},
        })
    }

    #[test]
    fn the_newest_revision_with_another_image() {
        let sets = [
            rs("m-predictor", 1, "m:1"),
            rs("m-predictor", 3, "m:2"),
            rs("m-predictor", 4, "m:3"),
            // A restart: same image, newer revision.
            rs("m-predictor", 5, "m:3"),
            rs("other-predictor", 9, "o:1"),
        ];
        let previous = |current| previous_image(&sets, "m-predictor", "kserve-container", current);
        assert_eq!(previous("m:3").as_deref(), Some("m:2"));
        assert_eq!(previous("m:2").as_deref(), Some("m:3"));
        assert_eq!(
            previous_image(&sets[..1], "m-predictor", "kserve-container", "m:1"),
            None,
            "a first deployment has no previous image"
        );
        assert_eq!(
            previous_image(&sets, "x-predictor", "kserve-container", "m:3"),
            None
        );
    }
}
