//! ArgoCD: Applications compared with git, drift, sync and rollback.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    resources,
    scenario::HealthStatus,
    world::{ArgoHistory, ArgoState, World},
};

use super::kserve::template_of;

fn revision_sha(app: &str, n: u64) -> String {
    let digest = Sha256::new()
        .chain_update(app)
        .chain_update(n.to_le_bytes())
        .finalize();
    hex::encode(&digest[..20])
}

impl World {
    pub(super) fn drift(&mut self, app: &str) {
        let Some(state) = self.apps.get(app) else {
            return;
        };
        let dest = state.destination.clone();
        let managed: Vec<String> = state.git.keys().cloned().collect();
        match managed.first() {
            Some(first) => {
                if let Some(mut isvc) = self
                    .get_obj(&resources::INFERENCE_SERVICES, &dest, first)
                    .cloned()
                {
                    isvc["spec"]["predictor"]["annotations"]["opsmesh.dev/drift"] =
                        json!("manual-edit");
                    self.put(&resources::INFERENCE_SERVICES, &dest, first, isvc);
                }
            }
            None => {
                if let Some(s) = self.apps.get_mut(app) {
                    s.drifted = true;
                }
            }
        }
    }

    pub(super) fn reconcile_apps(&mut self, now: Duration) {
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for app in names {
            let Some(mut obj) = self
                .get_obj(&resources::APPLICATIONS, resources::ARGOCD_NAMESPACE, &app)
                .cloned()
            else {
                self.apps.remove(&app);
                continue;
            };
            let state = self.apps[&app].clone();
            let mut out_of_sync = state.drifted;
            let mut healths = Vec::new();
            let mut res = Vec::new();
            let mut images = Vec::new();
            for (name, git_spec) in &state.git {
                let live = self.get_obj(&resources::INFERENCE_SERVICES, &state.destination, name);
                let (sync, health) = match live {
                    None => ("OutOfSync", "Missing"),
                    Some(live) => {
                        images.push(template_of(live).image);
                        let ready = live["status"]["conditions"]
                            .as_array()
                            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                            .is_some_and(|c| c["status"] == "True");
                        let health = if ready {
                            "Healthy"
                        } else if self
                            .workloads
                            .get(&(state.destination.clone(), name.clone()))
                            .is_some_and(|w| {
                                w.pods.iter().all(|p| {
                                    now.saturating_sub(p.created) < self.config.pod_startup
                                }) && w.blocked.is_none()
                                    && !w.pods.is_empty()
                            })
                        {
                            "Progressing"
                        } else {
                            "Degraded"
                        };
                        (
                            if live["spec"] == *git_spec {
                                "Synced"
                            } else {
                                "OutOfSync"
                            },
                            health,
                        )
                    }
                };
                out_of_sync |= sync == "OutOfSync";
                healths.push(health);
                res.push(json!({"group": "serving.kserve.io", "version": "v1beta1", "kind": "InferenceService", "namespace": state.destination, "name": name, "status": sync, "health": {"status": health}}));
            }
            let health = if healths.is_empty() {
                state.health.as_str()
            } else if healths.contains(&"Missing") {
                "Missing"
            } else if healths.contains(&"Degraded") {
                "Degraded"
            } else if healths.contains(&"Progressing") {
                "Progressing"
            } else {
                "Healthy"
            };
            let history: Vec<Value> = state
                .history
                .iter()
                .map(|h| json!({"id": h.id, "revision": h.revision, "deployedAt": self.ts(h.deployed_at), "source": obj["spec"]["source"]}))
                .collect();
            let mut status = json!({
                "sync": {"status": if out_of_sync { "OutOfSync" } else { "Synced" }, "revision": state.revision, "comparedTo": {"source": obj["spec"]["source"], "destination": obj["spec"]["destination"]}},
                "health": {"status": health},
                "history": history,
                "resources": res,
                "summary": {"images": images},
                "sourceType": "Directory",
            });
            if let Some(op) = &state.operation {
                status["operationState"] = op.clone();
            }
            if obj["status"] != status {
                status["reconciledAt"] = json!(self.ts(now));
                obj["status"] = status;
                self.put(
                    &resources::APPLICATIONS,
                    resources::ARGOCD_NAMESPACE,
                    &app,
                    obj,
                );
            }
        }
    }

    /// `POST /api/v1/applications/<name>/sync`: live back to git.
    pub fn argo_sync(&mut self, app: &str, revision: Option<&str>, dry_run: bool) -> Option<Value> {
        self.reconcile();
        let now = self.clock.elapsed();
        let state = self.apps.get(app)?.clone();
        if !dry_run {
            for (name, spec) in &state.git {
                if let Some(mut live) = self
                    .get_obj(&resources::INFERENCE_SERVICES, &state.destination, name)
                    .cloned()
                {
                    live["spec"] = spec.clone();
                    self.put(
                        &resources::INFERENCE_SERVICES,
                        &state.destination,
                        name,
                        live,
                    );
                }
            }
            let started = self.ts(now);
            let s = self.apps.get_mut(app)?;
            if let Some(rev) = revision.filter(|r| !r.is_empty() && *r != "HEAD") {
                s.revision = rev.to_owned();
            }
            s.drifted = false;
            let id = s.history.last().map_or(0, |h| h.id + 1);
            s.history.push(ArgoHistory {
                id,
                revision: s.revision.clone(),
                deployed_at: now,
                git: s.git.clone(),
            });
            s.operation = Some(json!({
                "operation": {"sync": {"revision": s.revision}, "initiatedBy": {"username": "opsmesh"}},
                "phase": "Succeeded",
                "message": "successfully synced (all tasks run)",
                "startedAt": started,
                "finishedAt": started,
                "syncResult": {"revision": s.revision, "resources": s.git.keys().map(|n| json!({"kind": "InferenceService", "namespace": s.destination, "name": n, "status": "Synced", "message": "inferenceservice.serving.kserve.io/".to_owned() + n + " configured"})).collect::<Vec<_>>()},
            }));
        }
        self.reconcile();
        self.get_obj(&resources::APPLICATIONS, resources::ARGOCD_NAMESPACE, app)
            .cloned()
    }

    /// `POST /api/v1/applications/<name>/rollback`: live to a history entry.
    pub fn argo_rollback(
        &mut self,
        app: &str,
        id: i64,
        dry_run: bool,
    ) -> Result<Value, (u16, String)> {
        self.reconcile();
        let now = self.clock.elapsed();
        let state = self
            .apps
            .get(app)
            .cloned()
            .ok_or_else(|| (404, format!("applications.argoproj.io \"{app}\" not found")))?;
        let entry = state
            .history
            .iter()
            .find(|h| h.id == id)
            .cloned()
            .ok_or_else(|| {
                (
                    400,
                    format!("application {app} does not have deployment with id {id}"),
                )
            })?;
        if !dry_run {
            for (name, spec) in &entry.git {
                if let Some(mut live) = self
                    .get_obj(&resources::INFERENCE_SERVICES, &state.destination, name)
                    .cloned()
                {
                    live["spec"] = spec.clone();
                    self.put(
                        &resources::INFERENCE_SERVICES,
                        &state.destination,
                        name,
                        live,
                    );
                }
            }
            let ts = self.ts(now);
            if let Some(s) = self.apps.get_mut(app) {
                s.drifted = false;
                s.git = entry.git.clone();
                s.revision = entry.revision.clone();
                s.operation = Some(json!({
                    "operation": {"sync": {"revision": entry.revision}, "initiatedBy": {"username": "opsmesh"}},
                    "phase": "Succeeded",
                    "message": format!("rolled back to deployment {id}"),
                    "startedAt": ts,
                    "finishedAt": ts,
                }));
            }
        }
        self.reconcile();
        self.get_obj(&resources::APPLICATIONS, resources::ARGOCD_NAMESPACE, app)
            .cloned()
            .ok_or((404, format!("applications.argoproj.io \"{app}\" not found")))
    }

    /// Registers an ArgoCD Application (the object and ArgoCD's state).
    pub(crate) fn add_app(
        &mut self,
        name: &str,
        destination: &str,
        managed: &[String],
        initially_out_of_sync: bool,
        health: HealthStatus,
    ) {
        let mut git = BTreeMap::new();
        for m in managed {
            if let Some(isvc) = self.get_obj(&resources::INFERENCE_SERVICES, destination, m) {
                git.insert(m.clone(), isvc["spec"].clone());
            }
        }
        let revision = revision_sha(name, 0);
        let state = ArgoState {
            destination: destination.to_owned(),
            history: vec![ArgoHistory {
                id: 0,
                revision: revision.clone(),
                deployed_at: Duration::ZERO,
                git: git.clone(),
            }],
            git,
            revision,
            drifted: initially_out_of_sync,
            health,
            operation: None,
            revisions: 1,
        };
        self.apps.insert(name.to_owned(), state);
        self.put(
            &resources::APPLICATIONS,
            resources::ARGOCD_NAMESPACE,
            name,
            json!({
                "metadata": {},
                "spec": {
                    "project": "default",
                    "source": {"repoURL": format!("https://git.example.com/ml-platform/{name}.git"), "path": format!("apps/{name}"), "targetRevision": "HEAD"},
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": destination},
                    "syncPolicy": {},
                },
            }),
        );
    }

    /// Pushes a new git revision: what git wants for a managed InferenceService (tests).
    pub fn argo_commit(&mut self, app: &str, isvc: &str, spec: Value) -> Option<String> {
        let s = self.apps.get_mut(app)?;
        s.revisions += 1;
        s.git.insert(isvc.to_owned(), spec);
        s.revision = revision_sha(app, s.revisions);
        Some(s.revision.clone())
    }
}
