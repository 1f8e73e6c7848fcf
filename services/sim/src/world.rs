//! The simulated cluster: an object store with the API server's semantics (resource
//! versions, conflicts, validation, field ownership, dry runs, admission) and the request log.
//! The controllers that make the objects move live in [`crate::controller`].
//!
//! This module holds the world and its store; the API verbs, server-side apply, validation,
//! the request log and the controllers' state types each have a submodule.

mod api;
mod ownership;
mod request;
mod state;
mod validate;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use serde_json::{Map, Value, json};

use crate::{
    clock::{Clock, timestamp},
    duration::format_duration,
    rbac::Rbac,
    resources::{self, ResourceDef},
    scenario::PolicyAction,
};

use ownership::Owners;
pub use request::{Caller, PatchType, RequestRecord};
pub(crate) use state::Block;
pub use state::{ArgoHistory, ArgoState, FaultState, PodLife, SimPod, Workload};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster name OpenCost reports.
    pub cluster: String,
    /// Bearer token the ArgoCD API requires.
    pub argocd_token: String,
    /// Bearer token the Kubernetes API requires (none: any request is accepted).
    pub kube_token: Option<String>,
    /// RBAC allow-list for the Kubernetes API (none: everything is allowed).
    pub rbac: Option<Rbac>,
    /// How long a healthy predictor container takes to become ready.
    pub pod_startup: Duration,
    /// How long the scenario's initial state ran before the simulation began: OpenCost's
    /// history reaches that far back.
    pub seeded_history: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cluster: "default".into(),
            argocd_token: "sim-argocd-token".into(),
            kube_token: None,
            rbac: None,
            pod_startup: Duration::from_secs(10),
            seeded_history: Duration::from_secs(24 * 3600),
        }
    }
}

pub type ObjKey = (usize, String, String);

fn key(def: &ResourceDef, ns: &str, name: &str) -> ObjKey {
    (
        resources::index_of(def),
        if def.namespaced {
            ns.to_owned()
        } else {
            String::new()
        },
        name.to_owned(),
    )
}

pub struct World {
    pub clock: Arc<Clock>,
    pub config: SimConfig,
    pub(crate) objects: BTreeMap<ObjKey, Value>,
    owners: BTreeMap<ObjKey, Owners>,
    rv: u64,
    uid_seq: u64,
    pub(crate) workloads: BTreeMap<(String, String), Workload>,
    pub(crate) faults: Vec<FaultState>,
    pub(crate) bad_images: BTreeSet<(String, String, String)>,
    /// Per-replica hourly price of an InferenceService (namespace, name).
    pub(crate) pricing: BTreeMap<(String, String), f64>,
    /// Replicas the load asks an InferenceService's autoscaler for (namespace, name); without
    /// an entry it runs `minReplicas`.
    pub(crate) demand: BTreeMap<(String, String), u32>,
    /// GPU nodes and GPUs per node, once a `gpu_shortage` bounds them (else unbounded).
    pub(crate) gpu_nodes: Option<(u32, u32)>,
    /// Pod lives (indices into `pod_lives`) the scheduler bound to GPUs.
    pub(crate) gpu_bound: BTreeSet<usize>,
    pub(crate) pod_lives: Vec<PodLife>,
    pub(crate) apps: BTreeMap<String, ArgoState>,
    pub(crate) policies: BTreeMap<String, PolicyAction>,
    pub(crate) log: Vec<RequestRecord>,
}

pub fn now_ts(clock: &Clock) -> String {
    timestamp(clock.now())
}

impl World {
    pub fn new(clock: Arc<Clock>, config: SimConfig) -> Self {
        Self {
            clock,
            config,
            objects: BTreeMap::new(),
            owners: BTreeMap::new(),
            rv: 1000,
            uid_seq: 0,
            workloads: BTreeMap::new(),
            faults: Vec::new(),
            bad_images: BTreeSet::new(),
            pricing: BTreeMap::new(),
            demand: BTreeMap::new(),
            gpu_nodes: None,
            gpu_bound: BTreeSet::new(),
            pod_lives: Vec::new(),
            apps: BTreeMap::new(),
            policies: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn next_uid(&mut self) -> String {
        self.uid_seq += 1;
        let n = self.uid_seq;
        format!("5a1e0000-0000-4000-8000-{n:012x}")
    }

    // ---- internal store access (controllers) ----

    pub(crate) fn get_obj(&self, def: &ResourceDef, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(def, ns, name))
    }

    pub(crate) fn objects_of<'a>(
        &'a self,
        def: &ResourceDef,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let idx = resources::index_of(def);
        self.objects
            .iter()
            .filter(move |((i, n, _), _)| *i == idx && ns.is_none_or(|ns| n == ns))
            .map(|(_, v)| v)
    }

    /// Writes an object as a controller does: fills metadata, bumps the resource version
    /// only when something changed. Returns whether it changed.
    pub(crate) fn put(&mut self, def: &ResourceDef, ns: &str, name: &str, mut obj: Value) -> bool {
        let k = key(def, ns, name);
        let existing = self.objects.get(&k).cloned();
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        let meta = obj["metadata"].as_object_mut().cloned().unwrap_or_default();
        obj["metadata"] = Value::Object(meta);
        obj["metadata"]["name"] = json!(name);
        if def.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        match &existing {
            Some(old) => {
                for f in [
                    "uid",
                    "creationTimestamp",
                    "resourceVersion",
                    "generation",
                    "managedFields",
                ] {
                    if obj["metadata"].get(f).is_none()
                        && let Some(v) = old["metadata"].get(f)
                    {
                        obj["metadata"][f] = v.clone();
                    }
                }
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                if *old == obj {
                    return false;
                }
                if spec_of(old) != spec_of(&obj) && old["metadata"].get("generation").is_some() {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                    obj["metadata"]["generation"] = json!(g + 1);
                }
            }
            None => {
                let uid = self.next_uid();
                obj["metadata"]["uid"] = json!(uid);
                if obj["metadata"].get("creationTimestamp").is_none() {
                    obj["metadata"]["creationTimestamp"] = json!(now_ts(&self.clock));
                }
                if def.kind != "Event" && def.kind != "Namespace" {
                    obj["metadata"]["generation"] = json!(1);
                }
            }
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(k, obj);
        true
    }

    pub(crate) fn remove(&mut self, def: &ResourceDef, ns: &str, name: &str) -> Option<Value> {
        let k = key(def, ns, name);
        self.owners.remove(&k);
        let removed = self.objects.remove(&k);
        if removed.is_some() {
            self.rv += 1;
        }
        removed
    }

    /// Everything, for `GET /_sim/state`.
    pub fn dump(&mut self) -> Value {
        self.reconcile();
        let mut out = Map::new();
        for ((i, ns, name), v) in &self.objects {
            let def = &resources::ALL[*i];
            let entry = out.entry(def.qualified()).or_insert_with(|| json!({}));
            let id = if ns.is_empty() {
                name.clone()
            } else {
                format!("{ns}/{name}")
            };
            entry[id] = v.clone();
        }
        json!({
            "elapsed": format_duration(self.clock.elapsed()),
            "now": now_ts(&self.clock),
            "resourceVersion": self.rv.to_string(),
            "objects": out,
            "faults": self.faults.iter().map(FaultState::describe).collect::<Vec<_>>(),
        })
    }
}

fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}
