//! The Deployment controller, as KServe's raw-deployment mode uses it: each predictor runs as
//! the Deployment `<isvc>-predictor`, with one ReplicaSet per revision of its pod template
//! (annotation `deployment.kubernetes.io/revision`), the older ones scaled to zero. That
//! history is what `kubectl rollout undo` and opsmesh's rollback read.

use serde_json::{Value, json};

pub use opsmesh_proto::revisions::REVISION_ANNOTATION;
use opsmesh_proto::revisions::{self, owned_by};

use crate::{resources, world::World};

use super::{ISVC_LABEL, kserve::Template};

const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// A Deployment's default `revisionHistoryLimit`: older scaled-down ReplicaSets are deleted.
const HISTORY_LIMIT: usize = 10;

pub(super) fn deployment_name(isvc: &str) -> String {
    format!("{isvc}-predictor")
}

pub(super) fn replica_set_name(isvc: &str, hash: &str) -> String {
    format!("{isvc}-predictor-{hash}")
}

/// The labels KServe puts on the predictor's pods (and so on its Deployment's template).
pub(super) fn pod_labels(isvc: &str) -> Value {
    json!({ISVC_LABEL: isvc, "component": "predictor", "app": deployment_name(isvc)})
}

fn revision_of(rs: &Value) -> u64 {
    revisions::revision(rs).unwrap_or(0)
}

impl World {
    /// The ReplicaSets of a predictor Deployment, by name.
    fn replica_sets_of(&self, ns: &str, deployment: &str) -> Vec<(String, Value)> {
        self.objects_of(&resources::REPLICA_SETS, Some(ns))
            .filter(|rs| owned_by(rs, deployment))
            .map(|rs| {
                (
                    rs["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                    rs.clone(),
                )
            })
            .collect()
    }

    /// Writes the Deployment for `t` and makes its ReplicaSet the newest revision (a new one,
    /// or an older one brought back, as a rollback does); the others are scaled to zero and the
    /// oldest beyond the history limit deleted. Returns the ReplicaSet's uid, for its pods.
    pub(super) fn roll_out(&mut self, ns: &str, name: &str, isvc: &Value, t: &Template) -> String {
        let deployment = deployment_name(name);
        let current = replica_set_name(name, &t.hash);
        let sets = self.replica_sets_of(ns, &deployment);
        let newest = sets
            .iter()
            .map(|(_, rs)| revision_of(rs))
            .max()
            .unwrap_or(0);
        let (revision, history) = match sets.iter().find(|(n, _)| *n == current) {
            Some((_, rs)) if revision_of(rs) == newest => (newest, None),
            Some((_, rs)) => (newest + 1, Some(revision_of(rs))),
            None => (newest + 1, None),
        };
        let mut template = json!({
            "metadata": {"labels": pod_labels(name), "annotations": t.pod_annotations},
            "spec": {"containers": [t.container]},
        });
        if let Some(sc) = &t.security_context {
            template["spec"]["securityContext"] = sc.clone();
        }
        let old = self
            .get_obj(&resources::DEPLOYMENTS, ns, &deployment)
            .cloned()
            .unwrap_or(json!({}));
        let mut dep = json!({
            "metadata": {
                "labels": pod_labels(name),
                "annotations": {REVISION_ANNOTATION: revision.to_string()},
                "ownerReferences": [{"apiVersion": resources::INFERENCE_SERVICES.api_version(), "kind": "InferenceService", "name": name, "uid": isvc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {
                "replicas": t.replicas,
                "selector": {"matchLabels": {"app": deployment}},
                "template": template,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "revisionHistoryLimit": HISTORY_LIMIT,
                "progressDeadlineSeconds": 600,
            },
        });
        dep["status"] = old.get("status").cloned().unwrap_or(json!({}));
        self.put(&resources::DEPLOYMENTS, ns, &deployment, dep);
        let dep_uid = self
            .get_obj(&resources::DEPLOYMENTS, ns, &deployment)
            .map(|d| d["metadata"]["uid"].clone())
            .unwrap_or_default();

        for (rs_name, mut rs) in sets.clone() {
            if rs_name != current {
                rs["spec"]["replicas"] = json!(0);
                rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                    json!(t.replicas.to_string());
                self.put(&resources::REPLICA_SETS, ns, &rs_name, rs);
            }
        }
        let mut rs = sets
            .iter()
            .find(|(n, _)| *n == current)
            .map(|(_, rs)| rs.clone())
            .unwrap_or_else(|| {
                let mut labels = pod_labels(name);
                labels["pod-template-hash"] = json!(t.hash);
                let mut template = template.clone();
                template["metadata"]["labels"] = labels.clone();
                json!({
                    "metadata": {
                        "labels": labels,
                        "annotations": {},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": dep_uid, "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": {
                        "selector": {"matchLabels": {"app": deployment, "pod-template-hash": t.hash}},
                        "template": template,
                    },
                    "status": {"replicas": 0},
                })
            });
        let annotations = &mut rs["metadata"]["annotations"];
        annotations[REVISION_ANNOTATION] = json!(revision.to_string());
        annotations["deployment.kubernetes.io/desired-replicas"] = json!(t.replicas.to_string());
        annotations["deployment.kubernetes.io/max-replicas"] =
            json!((t.replicas + t.replicas.div_ceil(4)).to_string());
        if let Some(previous) = history {
            let mut revisions: Vec<String> = annotations[REVISION_HISTORY_ANNOTATION]
                .as_str()
                .map(|h| h.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            revisions.push(previous.to_string());
            annotations[REVISION_HISTORY_ANNOTATION] = json!(revisions.join(","));
        }
        rs["spec"]["replicas"] = json!(t.replicas);
        self.put(&resources::REPLICA_SETS, ns, &current, rs);

        let mut scaled_down: Vec<(u64, String)> = self
            .replica_sets_of(ns, &deployment)
            .into_iter()
            .filter(|(n, _)| *n != current)
            .map(|(n, rs)| (revision_of(&rs), n))
            .collect();
        scaled_down.sort();
        let excess = scaled_down.len().saturating_sub(HISTORY_LIMIT);
        for (_, rs_name) in scaled_down.into_iter().take(excess) {
            self.remove(&resources::REPLICA_SETS, ns, &rs_name);
        }
        self.get_obj(&resources::REPLICA_SETS, ns, &current)
            .and_then(|rs| rs["metadata"]["uid"].as_str())
            .unwrap_or("")
            .to_owned()
    }

    /// The Deployment's and its ReplicaSets' status: `pods` exist, `ready` of them ready.
    pub(super) fn report_rollout(
        &mut self,
        ns: &str,
        name: &str,
        t: &Template,
        pods: u32,
        ready: u32,
    ) {
        let deployment = deployment_name(name);
        let current = replica_set_name(name, &t.hash);
        for (rs_name, mut rs) in self.replica_sets_of(ns, &deployment) {
            let (replicas, ready) = if rs_name == current {
                (pods, ready)
            } else {
                (0, 0)
            };
            let mut status = json!({"replicas": replicas, "fullyLabeledReplicas": replicas, "observedGeneration": rs["metadata"]["generation"]});
            if ready > 0 {
                status["readyReplicas"] = json!(ready);
                status["availableReplicas"] = json!(ready);
            }
            rs["status"] = status;
            self.put(&resources::REPLICA_SETS, ns, &rs_name, rs);
        }
        let Some(mut dep) = self
            .get_obj(&resources::DEPLOYMENTS, ns, &deployment)
            .cloned()
        else {
            return;
        };
        let available = ready >= t.replicas.saturating_sub(t.replicas / 4);
        let condition = |kind: &str, ok: bool, reason: &str| json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason});
        let mut status = json!({
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": pods,
            "updatedReplicas": pods,
            "conditions": [
                condition("Available", available, if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }),
                condition("Progressing", true, if ready >= t.replicas { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }),
            ],
        });
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
        }
        if t.replicas > ready {
            status["unavailableReplicas"] = json!(t.replicas - ready);
        }
        dep["status"] = status;
        self.put(&resources::DEPLOYMENTS, ns, &deployment, dep);
    }

    /// The InferenceService is gone: so are its Deployment and ReplicaSets (garbage collection).
    pub(super) fn remove_deployment(&mut self, ns: &str, name: &str) {
        let deployment = deployment_name(name);
        for (rs_name, _) in self.replica_sets_of(ns, &deployment) {
            self.remove(&resources::REPLICA_SETS, ns, &rs_name);
        }
        self.remove(&resources::DEPLOYMENTS, ns, &deployment);
    }
}
