//! opsmesh cluster simulator: one HTTP server speaking the Kubernetes API subset opsmesh uses
//! (core, KServe, Kyverno policy reports, ArgoCD Applications), the ArgoCD REST API and the
//! OpenCost allocation API, backed by a simulated cluster whose faults and remediations play
//! out on a virtual clock. The production clients (kube-rs, reqwest) talk to it unchanged.

pub mod clock;
pub mod controller;
pub mod duration;
mod logs;
pub mod opencost;
pub mod patch;
pub mod rbac;
pub mod resources;
pub mod scenario;
pub mod selector;
pub mod server;
pub mod status;
pub mod world;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::json;

use opsmesh_proto::{Target, quantity::format_bytes};

pub use clock::Clock;
pub use rbac::{Rbac, RbacRule};
pub use scenario::{Fault, Scenario, ScenarioError};
pub use server::SimServer;
pub use world::{RequestRecord, SimConfig, World};

use crate::{controller::ARGO_INSTANCE_LABEL, scenario::ClusterState};

/// Annotation on a namespace with its hourly budget in USD.
pub const BUDGET_ANNOTATION: &str = "opsmesh.dev/hourly-budget-usd";

/// A simulated cluster, shared by the HTTP server and the test or runner driving it.
#[derive(Clone)]
pub struct Simulator {
    world: Arc<Mutex<World>>,
    clock: Arc<Clock>,
}

impl Simulator {
    pub fn new(config: SimConfig, clock: Clock) -> Self {
        let clock = Arc::new(clock);
        Self {
            world: Arc::new(Mutex::new(World::new(clock.clone(), config))),
            clock,
        }
    }

    /// A simulator on a manual clock starting now, holding `scenario`'s state and faults.
    pub fn from_scenario(scenario: &Scenario, mut config: SimConfig) -> Self {
        config.cluster = scenario.cluster.clone();
        let sim = Self::new(config, Clock::manual(chrono::Utc::now()));
        sim.seed(&scenario.state);
        for (at, fault, target) in scenario.resolved_faults() {
            sim.inject(at, fault, target);
        }
        sim.with_world(World::reconcile);
        sim
    }

    /// Locks the world (never held across an await).
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.world())
    }

    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Moves virtual time forward, letting every fault and controller catch up.
    pub fn advance(&self, by: Duration) {
        let target = self.clock.elapsed() + by;
        self.world().advance_to(target);
    }

    pub fn advance_to(&self, elapsed: Duration) {
        self.world().advance_to(elapsed);
    }

    pub fn inject(&self, at: Duration, fault: Fault, target: Option<Target>) {
        self.world().inject(at, fault, target);
    }

    /// Every mutating request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.world().requests().to_vec()
    }

    /// Creates the objects of a scenario's `state`.
    pub fn seed(&self, state: &ClusterState) {
        let mut w = self.world();
        let mut namespaces: Vec<(String, Option<f64>)> = state
            .namespaces
            .iter()
            .map(|n| (n.name.clone(), n.hourly_budget_usd))
            .collect();
        for isvc in &state.inference_services {
            if !namespaces.iter().any(|(n, _)| *n == isvc.namespace) {
                namespaces.push((isvc.namespace.clone(), None));
            }
        }
        if !state.argocd_apps.is_empty() {
            namespaces.push((resources::ARGOCD_NAMESPACE.to_owned(), None));
        }
        for (name, budget) in namespaces {
            let mut ns = json!({"metadata": {"labels": {"kubernetes.io/metadata.name": name}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            if let Some(b) = budget {
                ns["metadata"]["annotations"] = json!({BUDGET_ANNOTATION: b.to_string()});
            }
            w.put(&resources::NAMESPACES, "", &name, ns);
        }
        for n in &state.namespaces {
            if let Some(pods) = n.pod_quota {
                let quota = json!({"spec": {"hard": {"pods": pods.to_string()}}});
                w.put(&resources::RESOURCE_QUOTAS, &n.name, "team-quota", quota);
            }
        }
        for p in &state.policies {
            w.add_policy(&p.name, p.action);
        }
        for s in &state.inference_services {
            let image = s
                .image
                .clone()
                .unwrap_or_else(|| format!("registry.example.com/kserve/{}:1.0.0", s.name));
            let mut resources = json!({"limits": {}, "requests": {}});
            if let Some(m) = s.memory_limit {
                resources["limits"]["memory"] = json!(format_bytes(m.0));
            }
            if let Some(m) = s.memory_request {
                resources["requests"]["memory"] = json!(format_bytes(m.0));
            }
            if s.gpu > 0 {
                resources["limits"]["nvidia.com/gpu"] = json!(s.gpu.to_string());
                resources["requests"]["nvidia.com/gpu"] = json!(s.gpu.to_string());
            }
            let mut obj = json!({
                "metadata": {"labels": {}, "annotations": {}},
                "spec": {"predictor": {
                    "minReplicas": s.replicas,
                    "containers": [{"name": "kserve-container", "image": image, "resources": resources}],
                }},
            });
            if let Some(uri) = &s.storage_uri {
                obj["spec"]["predictor"]["containers"][0]["env"] =
                    json!([{"name": opsmesh_proto::storage::STORAGE_URI_ENV, "value": uri}]);
            }
            if let Some(app) = &s.argocd_app {
                obj["metadata"]["labels"][ARGO_INSTANCE_LABEL] = json!(app);
                obj["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] = json!(format!(
                    "{app}:serving.kserve.io/InferenceService:{}/{}",
                    s.namespace, s.name
                ));
            }
            if let Some(price) = s.hourly_cost_usd {
                w.pricing
                    .insert((s.namespace.clone(), s.name.clone()), price);
            }
            if let Some(previous) = &s.previous_image {
                // Deployed before the current image: its ReplicaSet is the older revision.
                let mut before = obj.clone();
                before["spec"]["predictor"]["containers"][0]["image"] = json!(previous);
                w.put(
                    &resources::INFERENCE_SERVICES,
                    &s.namespace,
                    &s.name,
                    before,
                );
                w.reconcile();
            }
            w.put(&resources::INFERENCE_SERVICES, &s.namespace, &s.name, obj);
        }
        for app in &state.argocd_apps {
            let managed: Vec<String> = state
                .inference_services
                .iter()
                .filter(|i| {
                    i.argocd_app.as_deref() == Some(app.name.as_str())
                        && i.namespace == app.namespace
                })
                .map(|i| i.name.clone())
                .collect();
            w.add_app(
                &app.name,
                &app.namespace,
                &managed,
                app.sync == scenario::SyncStatus::OutOfSync,
                app.health,
            );
        }
        w.reconcile();
        let history = w.config.seeded_history;
        for life in w.pod_lives.iter_mut().filter(|l| l.end.is_none()) {
            life.ran_before = history;
        }
    }
}
