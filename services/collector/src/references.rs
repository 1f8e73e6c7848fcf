//! Secrets and ConfigMaps a predictor pod references but the kubelet cannot find: read from
//! the kubelet's own words (the container's `CreateContainerConfigError` message, or a
//! `FailedMount` event), then matched against the pod spec to say which keys and which env
//! variables or volumes use the object.

use k8s_openapi::api::core::v1::{Event, Pod, PodSpec};

use opsmesh_proto::telemetry::{MissingReference, ReferenceKind};

/// The object a kubelet message says is missing: `secret "hf-token" not found`,
/// `configmap "cfg" not found`, `couldn't find key token in Secret ns/hf-token`.
pub fn parse_missing(message: &str) -> Option<(ReferenceKind, String)> {
    for (word, kind) in [
        ("secret \"", ReferenceKind::Secret),
        ("configmap \"", ReferenceKind::ConfigMap),
    ] {
        if let Some(start) = message.find(word) {
            let rest = &message[start + word.len()..];
            if let Some((name, tail)) = rest.split_once('"')
                && tail.trim_start().starts_with("not found")
                && !name.is_empty()
            {
                return Some((kind, name.to_owned()));
            }
        }
    }
    let (_, rest) = message.split_once("couldn't find key ")?;
    let (_, object) = rest.split_once(" in ")?;
    let (kind, path) = object.split_once(' ')?;
    let kind = match kind {
        "Secret" => ReferenceKind::Secret,
        "ConfigMap" => ReferenceKind::ConfigMap,
        _ => return None,
    };
    let name = path.trim().rsplit('/').next()?.trim_end_matches('.');
    (!name.is_empty()).then(|| (kind, name.to_owned()))
}

/// The missing object `pod` waits for, from its containers' waiting messages or the
/// `FailedMount` events about it (`events` may hold any namespace's).
pub fn missing_in(pod: &Pod, events: &[Event]) -> Option<MissingReference> {
    let status = pod.status.as_ref();
    let waiting = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.message.clone());
    let mounts = events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("FailedMount")
                && e.involved_object.name == pod.metadata.name
                && e.metadata.namespace == pod.metadata.namespace
        })
        .filter_map(|e| e.message.clone());
    let (message, (kind, name)) = waiting
        .chain(mounts)
        .find_map(|m| parse_missing(&m).map(|found| (m, found)))?;
    let (keys, used_by) = pod
        .spec
        .as_ref()
        .map(|spec| uses(spec, kind, &name))
        .unwrap_or_default();
    Some(MissingReference {
        kind,
        name,
        keys,
        used_by,
        message,
    })
}

/// The keys read from the object and where the spec references it.
fn uses(spec: &PodSpec, kind: ReferenceKind, name: &str) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut used_by = Vec::new();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        for env in c.env.iter().flatten() {
            let Some(from) = &env.value_from else {
                continue;
            };
            let key = match kind {
                ReferenceKind::Secret => from
                    .secret_key_ref
                    .as_ref()
                    .filter(|r| r.name == name)
                    .map(|r| r.key.clone()),
                ReferenceKind::ConfigMap => from
                    .config_map_key_ref
                    .as_ref()
                    .filter(|r| r.name == name)
                    .map(|r| r.key.clone()),
            };
            if let Some(key) = key {
                keys.push(key);
                used_by.push(format!("env {} of container {}", env.name, c.name));
            }
        }
        for from in c.env_from.iter().flatten() {
            let named = match kind {
                ReferenceKind::Secret => from.secret_ref.as_ref().map(|r| r.name.as_str()),
                ReferenceKind::ConfigMap => from.config_map_ref.as_ref().map(|r| r.name.as_str()),
            };
            if named == Some(name) {
                used_by.push(format!("envFrom of container {}", c.name));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        let items = match kind {
            ReferenceKind::Secret => v
                .secret
                .as_ref()
                .filter(|s| s.secret_name.as_deref() == Some(name))
                .map(|s| s.items.clone().unwrap_or_default()),
            ReferenceKind::ConfigMap => v
                .config_map
                .as_ref()
                .filter(|c| c.name == name)
                .map(|c| c.items.clone().unwrap_or_default()),
        };
        if let Some(items) = items {
            keys.extend(items.into_iter().map(|i| i.key));
            used_by.push(format!("volume {}", v.name));
        }
    }
    keys.sort();
    keys.dedup();
    (keys, used_by)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_kubelet_messages_name_the_object() {
        assert_eq!(
            parse_missing("secret \"hf-token\" not found"),
            Some((ReferenceKind::Secret, "hf-token".into()))
        );
        assert_eq!(
            parse_missing(
                "MountVolume.SetUp failed for volume \"cfg\" : configmap \"model-cfg\" not found"
            ),
            Some((ReferenceKind::ConfigMap, "model-cfg".into()))
        );
        assert_eq!(
            parse_missing("couldn't find key token in Secret ml-team-a/hf-token"),
            Some((ReferenceKind::Secret, "hf-token".into()))
        );
        assert_eq!(parse_missing("Back-off pulling image \"x\""), None);
        assert_eq!(parse_missing("secret \"x\" is forbidden"), None);
    }

    #[test]
    fn the_pod_spec_says_which_keys_and_where() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{
                    "name": "kserve-container",
                    "env": [
                        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}},
                        {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}
                    ],
                    "envFrom": [{"secretRef": {"name": "hf-token"}}]
                }],
                "volumes": [{"name": "creds", "secret": {"secretName": "hf-token", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]
            },
            "status": {"containerStatuses": [{
                "name": "kserve-container", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"hf-token\" not found"}}
            }]}
        }))
        .unwrap();
        let found = missing_in(&pod, &[]).expect("the waiting message names it");
        assert_eq!(found.kind, ReferenceKind::Secret);
        assert_eq!(found.name, "hf-token");
        assert_eq!(found.keys, ["ca.crt", "token"]);
        assert_eq!(
            found.used_by,
            [
                "env HF_TOKEN of container kserve-container",
                "envFrom of container kserve-container",
                "volume creds"
            ]
        );
    }

    #[test]
    fn a_failed_mount_event_about_the_pod_names_it() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "cfg", "configMap": {"name": "model-cfg"}}]}
        }))
        .unwrap();
        let event = |pod: &str| -> Event {
            serde_json::from_value(json!({
                "metadata": {"name": "e", "namespace": "ns"},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": "ns"},
                "reason": "FailedMount",
                "message": "MountVolume.SetUp failed for volume \"cfg\" : configmap \"model-cfg\" not found"
            }))
            .unwrap()
        };
        assert_eq!(missing_in(&pod, &[event("another-pod")]), None);
        let found = missing_in(&pod, &[event("p")]).expect("the event names it");
        assert_eq!(
            (found.kind, found.name.as_str(), found.used_by),
            (
                ReferenceKind::ConfigMap,
                "model-cfg",
                vec!["volume cfg".into()]
            )
        );
        assert!(found.keys.is_empty());
    }
}
