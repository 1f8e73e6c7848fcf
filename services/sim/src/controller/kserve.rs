//! KServe: predictor pods follow their InferenceService's template; its status reports them.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    resources,
    scenario::{Fault, PolicyAction},
    world::{Block, PodLife, SimPod, Workload, World},
};

use super::{
    CONTAINER, Demand, NODE,
    deployment::{pod_labels, replica_set_name},
    event, event_name, pod_demand, rule_name,
};

/// What `kubectl rollout restart` writes on a pod template. KServe carries the
/// InferenceService's annotations and the predictor's `annotations` to its pods, so either
/// place restarts them.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// The predictor pod an InferenceService asks for.
#[derive(Debug, Clone)]
pub(super) struct Template {
    pub container: Value,
    pub security_context: Option<Value>,
    /// The pod template's annotations: the predictor's, and a restart stamp on the
    /// InferenceService.
    pub pod_annotations: Value,
    pub image: String,
    pub replicas: u32,
    pub hash: String,
}

pub(super) fn template_of(isvc: &Value) -> Template {
    let predictor = &isvc["spec"]["predictor"];
    let mut container = match predictor["containers"].get(0) {
        Some(c) => c.clone(),
        None => {
            let model = &predictor["model"];
            let format = model["modelFormat"]["name"]
                .as_str()
                .unwrap_or("huggingface");
            let image = model
                .get("image")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    format!(
                        "kserve/{format}server:{}",
                        model["runtimeVersion"].as_str().unwrap_or("latest")
                    )
                });
            json!({"image": image, "resources": model.get("resources").cloned().unwrap_or(json!({}))})
        }
    };
    container["name"] = json!(CONTAINER);
    let image = container["image"].as_str().unwrap_or("").to_owned();
    let replicas = predictor
        .get("minReplicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let mut shape = predictor.clone();
    if let Some(m) = shape.as_object_mut() {
        for f in [
            "minReplicas",
            "maxReplicas",
            "scaleTarget",
            "scaleMetric",
            "canaryTrafficPercent",
        ] {
            m.remove(f);
        }
    }
    let mut pod_annotations = match &predictor["annotations"] {
        Value::Object(a) => Value::Object(a.clone()),
        _ => json!({}),
    };
    if let Some(at) = isvc["metadata"]["annotations"].get(RESTARTED_AT_ANNOTATION) {
        pod_annotations[RESTARTED_AT_ANNOTATION] = at.clone();
    }
    let digest = Sha256::new()
        .chain_update(shape.to_string())
        .chain_update(pod_annotations.to_string())
        .finalize();
    let hash = hex::encode(&digest[..5]);
    Template {
        pod_annotations,
        security_context: predictor.get("securityContext").cloned(),
        container,
        image,
        replicas,
        hash,
    }
}

impl Template {
    fn run_as_non_root(&self) -> bool {
        let pod = self
            .security_context
            .as_ref()
            .and_then(|s| s.get("runAsNonRoot"))
            .and_then(Value::as_bool);
        let container = self.container["securityContext"]
            .get("runAsNonRoot")
            .and_then(Value::as_bool);
        container.or(pod).unwrap_or(false)
    }

    /// Whether the pod satisfies a Kyverno policy (by what its name says it checks).
    pub(super) fn satisfies(&self, policy: &str) -> bool {
        if policy.contains("root") {
            self.run_as_non_root()
        } else if policy.contains("limit") || policy.contains("resources") {
            self.container["resources"]["limits"]
                .get("memory")
                .is_some()
        } else if policy.contains("latest") || policy.contains("tag") {
            self.image
                .rsplit_once(':')
                .is_some_and(|(_, tag)| tag != "latest" && !tag.contains('/'))
        } else {
            false
        }
    }
}

/// Default OpenCost price of one pod when the scenario gave none: GPUs dominate.
pub(super) fn default_hourly(demand: &Demand) -> f64 {
    demand.gpu as f64 * 2.5 + demand.memory_request as f64 / (1u64 << 30) as f64 * 0.01 + 0.05
}

impl World {
    pub(super) fn force_rollout(&mut self, ns: &str, name: &str) {
        if let Some(wl) = self.workloads.get_mut(&(ns.to_owned(), name.to_owned())) {
            wl.template_hash = "rollout".into();
        }
    }

    pub(super) fn delete_pod(&mut self, ns: &str, pod: &SimPod, now: Duration) {
        self.remove(&resources::PODS, ns, &pod.name);
        if let Some(life) = self.pod_lives.get_mut(pod.life) {
            life.end.get_or_insert(now);
        }
    }

    pub(super) fn reconcile_isvc(&mut self, ns: &str, name: &str, now: Duration) {
        let Some(isvc) = self
            .get_obj(&resources::INFERENCE_SERVICES, ns, name)
            .cloned()
        else {
            return;
        };
        let mut template = template_of(&isvc);
        template.replicas = self.autoscaled_replicas(ns, name, &isvc, template.replicas);
        let wkey = (ns.to_owned(), name.to_owned());
        let mut wl = self.workloads.remove(&wkey).unwrap_or_default();
        let mut restart = false;

        // Pods deleted through the API are replaced: that is a restart.
        let (kept, deleted): (Vec<SimPod>, Vec<SimPod>) = wl
            .pods
            .drain(..)
            .partition(|p| self.get_obj(&resources::PODS, ns, &p.name).is_some());
        for p in deleted {
            if let Some(life) = self.pod_lives.get_mut(p.life) {
                life.end.get_or_insert(now);
            }
            restart = true;
        }
        wl.pods = kept;
        if wl.template_hash != template.hash {
            if !wl.template_hash.is_empty() {
                restart = true;
            }
            for p in std::mem::take(&mut wl.pods) {
                self.delete_pod(ns, &p, now);
            }
            wl.template_hash = template.hash.clone();
            wl.blocked = None;
        }
        if restart {
            self.restarted(ns, name, now);
        }
        while wl.pods.len() > template.replicas as usize {
            if let Some(p) = wl.pods.pop() {
                self.delete_pod(ns, &p, now);
            }
        }
        let replica_set_uid = self.roll_out(ns, name, &isvc, &template);
        let mut block = None;
        while wl.pods.len() < template.replicas as usize {
            match self.create_predictor_pod(ns, name, &replica_set_uid, &template, &mut wl, now) {
                Ok(()) => {}
                Err(b) => {
                    block = Some(b);
                    break;
                }
            }
        }
        wl.blocked = match (block, wl.blocked.take()) {
            (Some(b), Some((old, since))) if old == b => Some((b, since)),
            (Some(b), _) => Some((b, now)),
            (None, _) => None,
        };

        let mut ready = 0u32;
        let mut reasons: Vec<String> = Vec::new();
        for pod in wl.pods.clone() {
            let (is_ready, reason) = self.update_pod(ns, name, &pod, now);
            if is_ready {
                ready += 1;
            }
            if let Some(r) = reason
                && !reasons.contains(&r)
            {
                reasons.push(r);
            }
        }
        self.report_rollout(ns, name, &template, wl.pods.len() as u32, ready);
        let rs_name = replica_set_name(name, &template.hash);
        if let Some((b, since)) = &wl.blocked {
            let attempts = 1 + ((now.saturating_sub(*since)).as_secs() / 30) as u32;
            let msg = match b {
                Block::Denied {
                    policy,
                    rule,
                    message,
                } => {
                    let text = format!(
                        "admission webhook \"validate.kyverno.svc-fail\" denied the request: \n\nresource Pod/{ns}/{rs_name}-xxxxx was blocked due to the following policies\n\n{policy}:\n  {rule}: '{message}'"
                    );
                    let ev = event(
                        ns,
                        json!({"apiVersion": resources::INFERENCE_SERVICES.api_version(), "kind": "InferenceService", "name": name, "namespace": ns}),
                        "PolicyViolation",
                        format!("policy {policy}/{rule} fail (blocked): {message}"),
                        "Warning",
                        attempts,
                        self.ts(*since),
                        self.ts(now),
                        "kyverno-admission",
                    );
                    self.put(
                        &resources::EVENTS,
                        ns,
                        &event_name(name, "PolicyViolation"),
                        ev,
                    );
                    text
                }
                Block::Admission(m) => m.clone(),
            };
            reasons.push(msg.lines().next().unwrap_or("").to_owned());
            let ev = event(
                ns,
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "namespace": ns}),
                "FailedCreate",
                format!("Error creating: {msg}"),
                "Warning",
                attempts,
                self.ts(*since),
                self.ts(now),
                "replicaset-controller",
            );
            self.put(
                &resources::EVENTS,
                ns,
                &event_name(&rs_name, "FailedCreate"),
                ev,
            );
        }
        self.write_isvc_status(ns, name, &isvc, &template, ready, &reasons, now);
        self.workloads.insert(wkey, wl);
    }

    fn create_predictor_pod(
        &mut self,
        ns: &str,
        name: &str,
        replica_set_uid: &str,
        t: &Template,
        wl: &mut Workload,
        now: Duration,
    ) -> Result<(), Block> {
        for f in self.faults.clone() {
            if let Fault::PolicyDenial { policy, reason, .. } = &f.fault
                && f.applied
                && f.targets_isvc(ns, name)
                && self.policies.get(policy) == Some(&PolicyAction::Enforce)
                && !t.satisfies(policy)
            {
                return Err(Block::Denied {
                    policy: policy.clone(),
                    rule: rule_name(policy),
                    message: reason.clone(),
                });
            }
        }
        wl.next_index += 1;
        let digest = Sha256::new()
            .chain_update(format!("{ns}/{name}/{}/{}", t.hash, wl.next_index))
            .finalize();
        let suffix = hex::encode(&digest[..3])[..5].to_owned();
        let rs = replica_set_name(name, &t.hash);
        let pod_name = format!("{rs}-{suffix}");
        let mut spec = json!({"containers": [t.container.clone()], "nodeName": NODE, "restartPolicy": "Always"});
        if let Some(sc) = &t.security_context {
            spec["securityContext"] = sc.clone();
        }
        let mut labels = pod_labels(name);
        labels["pod-template-hash"] = json!(t.hash);
        let mut pod = json!({
            "metadata": {
                "labels": labels,
                "annotations": t.pod_annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": replica_set_uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": spec,
        });
        super::storage::inject_initializer(&t.container, &mut pod);
        self.admit_pod(ns, &mut pod)
            .map_err(|msg| Block::Admission(format!("pods \"{rs}-\" is forbidden: {msg}")))?;
        let demand = pod_demand(&pod);
        let hourly = self
            .pricing
            .get(&(ns.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or_else(|| default_hourly(&demand));
        self.pod_lives.push(PodLife {
            namespace: ns.to_owned(),
            pod: pod_name.clone(),
            controller: Some(name.to_owned()),
            start: now,
            end: None,
            ran_before: Duration::ZERO,
            hourly_usd: hourly,
            gpu: demand.gpu as u32,
            memory_bytes: demand.memory_request,
        });
        let life = self.pod_lives.len() - 1;
        self.put(&resources::PODS, ns, &pod_name, pod);
        wl.pods.push(SimPod {
            name: pod_name,
            created: now,
            image: t.image.clone(),
            memory_limit: demand.container_limits.first().copied().flatten(),
            life,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_isvc_status(
        &mut self,
        ns: &str,
        name: &str,
        isvc: &Value,
        t: &Template,
        ready: u32,
        reasons: &[String],
        now: Duration,
    ) {
        let desired = t.replicas;
        let is_ready = if desired == 0 {
            true
        } else {
            ready >= 1 && ready >= desired - desired / 4
        };
        let old = isvc.get("status").cloned().unwrap_or(json!({}));
        let transition = |kind: &str, status: &str| -> String {
            old["conditions"]
                .as_array()
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c["type"] == kind && c["status"] == status)
                })
                .and_then(|c| c["lastTransitionTime"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| self.ts(now))
        };
        let message = reasons.join("; ");
        let cond = |kind: &str, ok: bool| {
            let status = if ok { "True" } else { "False" };
            let mut c = json!({"type": kind, "status": status, "lastTransitionTime": transition(kind, status)});
            if !ok {
                c["reason"] = json!(if kind == "IngressReady" {
                    "PredictorNotReady"
                } else {
                    "RevisionMissing"
                });
                c["message"] = json!(message);
            }
            c
        };
        let failed = reasons.iter().any(|r| {
            r.contains("OOMKilled")
                || r.contains("exited")
                || r.contains("ImagePull")
                || r.contains("CreateContainerConfigError")
                || r.contains("denied")
                || r.contains("forbidden")
        });
        let mut model_status = json!({
            "states": {"activeModelState": if ready > 0 { "Loaded" } else if failed { "FailedToLoad" } else { "Pending" }, "targetModelState": if is_ready { "Loaded" } else if failed { "FailedToLoad" } else { "Loading" }},
            "transitionStatus": if is_ready { "UpToDate" } else if failed { "BlockedByFailedLoad" } else { "InProgress" },
            "copies": {"totalCopies": desired, "failedCopies": desired.saturating_sub(ready)},
        });
        if failed {
            model_status["lastFailureInfo"] =
                json!({"reason": "ModelLoadFailed", "message": message, "time": self.ts(now)});
        }
        let revision = format!("{name}-predictor-{}", t.hash);
        let mut components = json!({"predictor": {"latestCreatedRevision": revision}});
        if is_ready {
            components["predictor"]["latestReadyRevision"] = json!(revision);
            components["predictor"]["url"] =
                json!(format!("http://{name}-predictor.{ns}.example.com"));
        }
        super::canary::route_traffic(isvc, &old, &mut components, &revision, is_ready);
        let status = json!({
            "observedGeneration": isvc["metadata"]["generation"],
            "url": format!("http://{name}.{ns}.example.com"),
            "address": {"url": format!("http://{name}.{ns}.svc.cluster.local")},
            "conditions": [cond("IngressReady", is_ready), cond("PredictorReady", is_ready), cond("Ready", is_ready)],
            "components": components,
            "modelStatus": model_status,
        });
        if old != status {
            let mut updated = isvc.clone();
            updated["status"] = status;
            self.put(&resources::INFERENCE_SERVICES, ns, name, updated);
        }
    }
}
