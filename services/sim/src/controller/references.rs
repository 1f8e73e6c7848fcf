//! Secrets and ConfigMaps a predictor reads through `env` / `envFrom`: a rollout that
//! references one that does not exist leaves the pod Pending with the container waiting in
//! `CreateContainerConfigError` and a kubelet `Failed` event, retried until the object exists
//! (then the container starts) — as the kubelet does.

use std::time::Duration;

use serde_json::{Value, json};

use opsmesh_proto::telemetry::ReferenceKind;

use crate::{resources, world::World};

use super::{CONTAINER, event, event_name};

/// How often the kubelet retries creating the container (its pod sync period).
const RETRY: Duration = Duration::from_secs(10);

impl World {
    /// The missing-reference fault: a rollout whose `kserve-container` reads `key` of the
    /// named object into `env`, while the object does not exist.
    pub(super) fn reference_missing_object(
        &mut self,
        ns: &str,
        isvc: &str,
        (kind, object, key, env): (ReferenceKind, &str, &str, &str),
    ) {
        let def = match kind {
            ReferenceKind::Secret => &resources::SECRETS,
            ReferenceKind::ConfigMap => &resources::CONFIG_MAPS,
        };
        self.remove(def, ns, object);
        let Some(mut obj) = self
            .get_obj(&resources::INFERENCE_SERVICES, ns, isvc)
            .cloned()
        else {
            return;
        };
        let source = match kind {
            ReferenceKind::Secret => json!({"secretKeyRef": {"name": object, "key": key}}),
            ReferenceKind::ConfigMap => json!({"configMapKeyRef": {"name": object, "key": key}}),
        };
        let Some(containers) = obj["spec"]["predictor"]["containers"].as_array_mut() else {
            return;
        };
        let Some(container) = containers.iter_mut().find(|c| c["name"] == CONTAINER) else {
            return;
        };
        let entry = json!({"name": env, "valueFrom": source});
        match container["env"].as_array_mut() {
            Some(list) => list.push(entry),
            None => container["env"] = json!([entry]),
        }
        self.put(&resources::INFERENCE_SERVICES, ns, isvc, obj);
    }

    /// The kubelet's message when a container of `pod` reads an object (or a key of it) that
    /// does not exist; references marked `optional` are skipped, as the kubelet does.
    pub(super) fn missing_config(&self, ns: &str, pod: &Value) -> Option<String> {
        let containers = pod["spec"]["containers"].as_array()?;
        for c in containers {
            for env in c["env"].as_array().into_iter().flatten() {
                for (field, kind) in [
                    ("secretKeyRef", ReferenceKind::Secret),
                    ("configMapKeyRef", ReferenceKind::ConfigMap),
                ] {
                    let r = &env["valueFrom"][field];
                    if let Some(name) = r["name"].as_str()
                        && r["optional"] != true
                        && let Some(msg) = self.lookup(ns, kind, name, r["key"].as_str())
                    {
                        return Some(msg);
                    }
                }
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                for (field, kind) in [
                    ("secretRef", ReferenceKind::Secret),
                    ("configMapRef", ReferenceKind::ConfigMap),
                ] {
                    let r = &from[field];
                    if let Some(name) = r["name"].as_str()
                        && r["optional"] != true
                        && let Some(msg) = self.lookup(ns, kind, name, None)
                    {
                        return Some(msg);
                    }
                }
            }
        }
        None
    }

    /// Why `key` of the object cannot be read, in the kubelet's words; `None` when it can.
    fn lookup(
        &self,
        ns: &str,
        kind: ReferenceKind,
        name: &str,
        key: Option<&str>,
    ) -> Option<String> {
        let (def, lower, title) = match kind {
            ReferenceKind::Secret => (&resources::SECRETS, "secret", "Secret"),
            ReferenceKind::ConfigMap => (&resources::CONFIG_MAPS, "configmap", "ConfigMap"),
        };
        let Some(obj) = self.get_obj(def, ns, name) else {
            return Some(format!("{lower} {name:?} not found"));
        };
        let key = key?;
        let present = ["data", "stringData", "binaryData"]
            .iter()
            .any(|section| obj[section].get(key).is_some());
        (!present).then(|| format!("couldn't find key {key} in {title} {ns}/{name}"))
    }

    /// Writes the kubelet's `Failed` event for a container it cannot create since `since`;
    /// returns the container state.
    pub(super) fn config_error(
        &mut self,
        ns: &str,
        pod: &str,
        involved: &Value,
        since: Duration,
        message: &str,
        now: Duration,
    ) -> Value {
        let attempts = 1 + (now.saturating_sub(since).as_secs() / RETRY.as_secs()) as u32;
        let ev = event(
            ns,
            involved.clone(),
            "Failed",
            format!("Error: {message}"),
            "Warning",
            attempts,
            self.ts(since),
            self.ts(now),
            "kubelet",
        );
        self.put(&resources::EVENTS, ns, &event_name(pod, "Failed"), ev);
        json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}})
    }
}
