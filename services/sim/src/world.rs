//! The simulated cluster: an object store with the API server's semantics (resource
//! versions, conflicts, validation, field ownership, dry runs, admission) and the request log.
//! The controllers that make the objects move live in [`crate::controller`].

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use serde::Serialize;
use serde_json::{Map, Value, json};

use opsmesh_proto::{
    Target,
    name::{is_dns_label, is_dns_subdomain},
    quantity::{parse_bytes, parse_quantity},
};

use crate::{
    clock::{Clock, timestamp},
    duration::format_duration,
    patch::{field_paths, fields_v1, json_patch, merge_patch},
    rbac::Rbac,
    resources::{self, ResourceDef},
    scenario::{Fault, HealthStatus, PolicyAction},
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
};

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
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cluster: "default".into(),
            argocd_token: "sim-argocd-token".into(),
            kube_token: None,
            rbac: None,
            pod_startup: Duration::from_secs(10),
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

/// One mutating request (or any request RBAC refused), as the simulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    /// Virtual time of the request (RFC 3339) and since the start (`3m12s`).
    pub at: String,
    pub elapsed: String,
    pub elapsed_ms: u64,
    /// `kubernetes` or `argocd`.
    pub api: &'static str,
    /// `create`, `update`, `patch`, `apply`, `delete`, `sync`, `rollback` (`get`, `list` when
    /// refused).
    pub verb: String,
    /// `pods`, `inferenceservices.serving.kserve.io`, `applications.argoproj.io`.
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    pub user_agent: String,
    pub body: Value,
    /// HTTP status the simulator answered.
    pub status: u16,
}

/// Who is asking and how.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub user_agent: String,
    pub field_manager: Option<String>,
    pub dry_run: bool,
    pub force: bool,
}

impl Caller {
    fn manager(&self) -> String {
        self.field_manager.clone().unwrap_or_else(|| {
            let ua = self.user_agent.split('/').next().unwrap_or("").trim();
            if ua.is_empty() {
                "unknown".into()
            } else {
                ua.to_owned()
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Json => "json",
            Self::Strategic => "strategic",
            Self::Apply => "apply",
        }
    }
}

/// Field ownership of one object: path → (manager, operation).
type Owners = BTreeMap<String, (String, &'static str)>;

/// A pod's life, for OpenCost.
#[derive(Debug, Clone)]
pub struct PodLife {
    pub namespace: String,
    pub pod: String,
    pub controller: Option<String>,
    pub start: Duration,
    pub end: Option<Duration>,
    pub hourly_usd: f64,
    pub gpu: u32,
    pub memory_bytes: u64,
}

/// An injected fault and where it stands.
#[derive(Debug, Clone)]
pub struct FaultState {
    pub at: Duration,
    pub fault: Fault,
    /// `None` for faults that hit whole APIs.
    pub target: Option<Target>,
    pub applied: bool,
    /// A transient crash loop ends at the first restart after its onset.
    pub cleared_at: Option<Duration>,
    /// When an `after_write` `api_outage` began: the first accepted write at or after `at`.
    pub began: Option<Duration>,
}

impl FaultState {
    pub fn describe(&self) -> Value {
        json!({
            "kind": self.fault.name(),
            "at": format_duration(self.at),
            "target": self.target.as_ref().map(Target::to_string),
            "applied": self.applied,
            "cleared_at": self.cleared_at.map(format_duration),
            "began": self.began.map(format_duration),
        })
    }

    pub(crate) fn targets_isvc(&self, ns: &str, name: &str) -> bool {
        matches!(&self.target, Some(Target::InferenceService { namespace, name: n }) if namespace == ns && n == name)
    }
}

#[derive(Debug, Clone)]
pub struct SimPod {
    pub name: String,
    pub created: Duration,
    pub image: String,
    pub memory_limit: Option<u64>,
    /// Index of the pod's life in [`World::pod_lives`].
    pub(crate) life: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Block {
    Denied {
        policy: String,
        rule: String,
        message: String,
    },
    Admission(String),
}

#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub template_hash: String,
    pub pods: Vec<SimPod>,
    pub next_index: u64,
    pub(crate) blocked: Option<(Block, Duration)>,
}

/// ArgoCD's view of one Application: what git says, and the sync history.
#[derive(Debug, Clone)]
pub struct ArgoState {
    pub destination: String,
    /// Desired spec of each managed InferenceService, by name.
    pub git: BTreeMap<String, Value>,
    pub revision: String,
    /// Live differs from git in a way not visible in managed specs.
    pub drifted: bool,
    pub history: Vec<ArgoHistory>,
    pub health: HealthStatus,
    pub operation: Option<Value>,
    pub revisions: u64,
}

#[derive(Debug, Clone)]
pub struct ArgoHistory {
    pub id: i64,
    pub revision: String,
    pub deployed_at: Duration,
    pub git: BTreeMap<String, Value>,
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

    // ---- the API ----

    fn check_namespace(&self, def: &ResourceDef, ns: &str) -> Result<(), ApiError> {
        if def.namespaced && self.get_obj(&resources::NAMESPACES, "", ns).is_none() {
            return Err(ApiError::not_found(&resources::NAMESPACES, ns));
        }
        Ok(())
    }

    pub fn get(&mut self, def: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.reconcile();
        self.get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    pub fn list(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        let items: Vec<Value> = self
            .objects_of(def, ns)
            .filter(|o| labels.matches(o["metadata"].get("labels")) && fields.matches(o))
            .cloned()
            .collect();
        Ok(json!({
            "kind": def.list_kind(),
            "apiVersion": def.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    /// Checks the identity fields of a body against the request.
    fn check_identity(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: Option<&str>,
        body: &Value,
    ) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str)
            && kind != def.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the provided object ({kind}) does not match the resource ({})",
                def.kind
            )));
        }
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
            && av != def.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version of the provided object ({av}) does not match the request ({})",
                def.api_version()
            )));
        }
        if def.namespaced
            && let Some(bns) = body["metadata"].get("namespace").and_then(Value::as_str)
            && bns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(name) = name
            && let Some(bname) = body["metadata"].get("name").and_then(Value::as_str)
            && bname != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bname}) does not match the name on the URL ({name})"
            )));
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        self.check_identity(def, ns, None, &body)?;
        let name = match body["metadata"].get("name").and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => match body["metadata"].get("generateName").and_then(Value::as_str) {
                Some(prefix) => {
                    let suffix = format!("{:05x}", (self.rv * 2654435761) % 0xfffff);
                    format!("{prefix}{suffix}")
                }
                None => {
                    return Err(ApiError::invalid(
                        def,
                        "",
                        "metadata.name",
                        "name or generateName is required",
                    ));
                }
            },
        };
        body["metadata"]["name"] = json!(name);
        if self.get_obj(def, ns, &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        self.check_namespace(def, ns)?;
        if def.status_subresource
            && def.custom
            && let Some(m) = body.as_object_mut()
        {
            m.remove("status");
        }
        if let Some(m) = body["metadata"].as_object_mut() {
            for f in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                m.remove(f);
            }
        }
        self.validate(def, ns, &name, &body)?;
        self.admit(def, ns, &name, &mut body)?;
        if caller.dry_run {
            return Ok(self.dry_run_view(def, ns, &name, body));
        }
        self.put(def, ns, &name, body.clone());
        let k = key(def, ns, &name);
        let owners = field_paths(&body)
            .into_keys()
            .map(|p| (p, (caller.manager(), "Update")))
            .collect();
        self.owners.insert(k, owners);
        self.after_write(def, ns, &name);
        self.reconcile();
        self.get_obj(def, ns, &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, &name))
    }

    /// What a dry run returns: the object as it would be stored, not stored.
    fn dry_run_view(&self, def: &ResourceDef, ns: &str, name: &str, mut body: Value) -> Value {
        body["apiVersion"] = json!(def.api_version());
        body["kind"] = json!(def.kind);
        body["metadata"]["name"] = json!(name);
        if def.namespaced {
            body["metadata"]["namespace"] = json!(ns);
        }
        if let Some(old) = self.get_obj(def, ns, name) {
            for f in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
                if let Some(v) = old["metadata"].get(f) {
                    body["metadata"][f] = v.clone();
                }
            }
        } else {
            body["metadata"]["creationTimestamp"] = json!(now_ts(&self.clock));
        }
        body
    }

    /// PUT: full replacement with optimistic concurrency.
    pub fn replace(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        status_only: bool,
        body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        self.check_identity(def, ns, Some(name), &body)?;
        let current = self
            .get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        match body["metadata"]
            .get("resourceVersion")
            .and_then(Value::as_str)
        {
            None | Some("") => {
                return Err(ApiError::invalid(
                    def,
                    name,
                    "metadata.resourceVersion",
                    "0x0: must be specified for an update",
                ));
            }
            Some(rv) if Some(rv) != current["metadata"]["resourceVersion"].as_str() => {
                return Err(ApiError::conflict(def, name));
            }
            _ => {}
        }
        let new = self.merge_subresource(def, &current, body, status_only);
        self.write_update(def, ns, name, &current, new, caller, None)
    }

    /// Keeps what the endpoint may not change: status on the main resource of kinds with a
    /// status subresource, everything but status on `/status`.
    fn merge_subresource(
        &self,
        def: &ResourceDef,
        current: &Value,
        mut body: Value,
        status_only: bool,
    ) -> Value {
        if status_only {
            let mut out = current.clone();
            out["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            if let Some(rv) = body["metadata"].get("resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            return out;
        }
        if def.status_subresource {
            match current.get("status") {
                Some(s) => body["status"] = s.clone(),
                None => {
                    if let Some(m) = body.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        body
    }

    #[allow(clippy::too_many_arguments)]
    fn write_update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        current: &Value,
        mut new: Value,
        caller: &Caller,
        apply_owned: Option<Owners>,
    ) -> Result<Value, ApiError> {
        // Identity and bookkeeping are the server's.
        for f in [
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "name",
            "namespace",
        ] {
            match current["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        new["apiVersion"] = json!(def.api_version());
        new["kind"] = json!(def.kind);
        self.validate(def, ns, name, &new)?;
        if caller.dry_run {
            return Ok(new);
        }
        let k = key(def, ns, name);
        let owners = match apply_owned {
            Some(o) => o,
            None => {
                let mut owners = self.owners.get(&k).cloned().unwrap_or_default();
                let before = field_paths(current);
                let after = field_paths(&new);
                owners.retain(|p, _| after.contains_key(p));
                for (p, v) in &after {
                    if before.get(p) != Some(v) {
                        owners.insert(p.clone(), (caller.manager(), "Update"));
                    }
                }
                owners
            }
        };
        self.owners.insert(k, owners);
        self.put(def, ns, name, new);
        self.after_write(def, ns, name);
        self.reconcile();
        self.get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    /// PATCH with any of the four patch types.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        status_only: bool,
        kind: PatchType,
        body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        if caller.force && kind != PatchType::Apply {
            return Err(ApiError::new(
                422,
                "Invalid",
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        if kind == PatchType::Strategic && def.custom {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        if kind == PatchType::Apply {
            return self.apply(def, ns, name, status_only, body, caller);
        }
        let current = self
            .get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let mut patched = current.clone();
        match kind {
            PatchType::Json => json_patch(&mut patched, &body).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?,
            _ => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                if let Some(rv) = body["metadata"]
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    && Some(rv) != current["metadata"]["resourceVersion"].as_str()
                {
                    return Err(ApiError::conflict(def, name));
                }
                merge_patch(&mut patched, &body);
            }
        }
        self.check_identity(def, ns, Some(name), &patched)?;
        let new = self.merge_subresource(def, &current, patched, status_only);
        self.write_update(def, ns, name, &current, new, caller, None)
    }

    /// Server-side apply: field ownership, conflicts with other managers, removal of fields
    /// the manager stopped applying.
    fn apply(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        status_only: bool,
        body: Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        let Some(manager) = caller.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        };
        self.check_identity(def, ns, Some(name), &body)?;
        if body.get("apiVersion").is_none() || body.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        let k = key(def, ns, name);
        let Some(current) = self.get_obj(def, ns, name).cloned() else {
            let mut body = body;
            body["metadata"]["name"] = json!(name);
            let created = self.create(
                def,
                ns,
                body.clone(),
                &Caller {
                    field_manager: Some(manager.clone()),
                    ..caller.clone()
                },
            )?;
            if !caller.dry_run {
                let owners = field_paths(&body)
                    .into_keys()
                    .map(|p| (p, (manager.clone(), "Apply")))
                    .collect();
                self.owners.insert(k, owners);
                self.refresh_managed_fields(def, ns, name);
            }
            return Ok(self.get_obj(def, ns, name).cloned().unwrap_or(created));
        };
        let applied = field_paths(&body);
        let live = field_paths(&current);
        let mut owners = self.owners.get(&k).cloned().unwrap_or_default();
        let mut conflicts = Vec::new();
        for (path, value) in &applied {
            if let Some((owner, _)) = owners.get(path)
                && *owner != manager
                && live.get(path).is_some_and(|v| v != value)
            {
                conflicts.push((path.clone(), owner.clone()));
            }
        }
        if !conflicts.is_empty() && !caller.force {
            return Err(ApiError::apply_conflict(def, name, &conflicts));
        }
        let mut merged = current.clone();
        // Fields this manager applied before and no longer applies (and nobody else owns) go.
        let dropped: Vec<String> = owners
            .iter()
            .filter(|(p, (m, op))| *m == manager && *op == "Apply" && !applied.contains_key(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &dropped {
            remove_path(&mut merged, p);
            owners.remove(p);
        }
        let mut patch = body.clone();
        if let Some(m) = patch.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        merge_patch(&mut merged, &patch);
        for p in applied.keys() {
            owners.insert(p.clone(), (manager.clone(), "Apply"));
        }
        let new = self.merge_subresource(def, &current, merged, status_only);
        let out = self.write_update(def, ns, name, &current, new, caller, Some(owners))?;
        if caller.dry_run {
            return Ok(out);
        }
        self.refresh_managed_fields(def, ns, name);
        Ok(self.get_obj(def, ns, name).cloned().unwrap_or(out))
    }

    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        options: &Value,
        caller: &Caller,
    ) -> Result<Value, ApiError> {
        self.reconcile();
        let current = self
            .get_obj(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let pre = &options["preconditions"];
        if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str)
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(def, name));
        }
        if let Some(uid) = pre.get("uid").and_then(Value::as_str)
            && Some(uid) != current["metadata"]["uid"].as_str()
        {
            return Err(ApiError::conflict(def, name));
        }
        let mut gone = current;
        gone["metadata"]["deletionTimestamp"] = json!(now_ts(&self.clock));
        if caller.dry_run {
            return Ok(gone);
        }
        self.remove(def, ns, name);
        if *def == resources::NAMESPACES {
            gone["status"] = json!({"phase": "Terminating"});
            let keys: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|(_, n, _)| n == name)
                .cloned()
                .collect();
            for k in keys {
                self.objects.remove(&k);
                self.owners.remove(&k);
            }
        }
        self.after_write(def, ns, name);
        self.reconcile();
        Ok(gone)
    }

    /// `managedFields` from the ownership table.
    fn refresh_managed_fields(&mut self, def: &ResourceDef, ns: &str, name: &str) {
        let k = key(def, ns, name);
        let Some(owners) = self.owners.get(&k) else {
            return;
        };
        let mut by: BTreeMap<(String, &'static str), Vec<&String>> = BTreeMap::new();
        for (p, (m, op)) in owners {
            by.entry((m.clone(), op)).or_default().push(p);
        }
        let now = now_ts(&self.clock);
        let entries: Vec<Value> = by
            .into_iter()
            .map(|((manager, op), paths)| {
                json!({
                    "manager": manager,
                    "operation": op,
                    "apiVersion": def.api_version(),
                    "time": now,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(&paths),
                })
            })
            .collect();
        if let Some(obj) = self.objects.get_mut(&k) {
            obj["metadata"]["managedFields"] = json!(entries);
        }
    }

    fn after_write(&mut self, def: &ResourceDef, ns: &str, name: &str) {
        self.refresh_managed_fields(def, ns, name);
        if *def == resources::PODS {
            self.pod_written(ns, name);
        }
    }

    /// Type-specific validation (`422 Invalid` naming the field).
    fn validate(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        obj: &Value,
    ) -> Result<(), ApiError> {
        let invalid = |field: &str, problem: String| ApiError::invalid(def, name, field, &problem);
        let ok_name = if *def == resources::NAMESPACES {
            is_dns_label(name)
        } else {
            is_dns_subdomain(name)
        };
        if !ok_name {
            return Err(invalid(
                "metadata.name",
                format!(
                    "{name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
                ),
            ));
        }
        let _ = ns;
        for section in ["labels", "annotations"] {
            if let Some(m) = obj["metadata"].get(section)
                && let Some(m) = m.as_object()
                && let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string())
            {
                return Err(invalid(
                    &format!("metadata.{section}.{k}"),
                    "must be a string".into(),
                ));
            }
        }
        let check_resources = |path: &str, resources: &Value| -> Result<(), ApiError> {
            for kind in ["limits", "requests"] {
                if let Some(m) = resources.get(kind).and_then(Value::as_object) {
                    for (res, v) in m {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            other => other.to_string(),
                        };
                        if parse_quantity(&text).is_err() {
                            return Err(invalid(
                                &format!("{path}.{kind}.{res}"),
                                format!(
                                    "{text:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                                ),
                            ));
                        }
                    }
                }
            }
            let mem = |kind: &str| {
                resources
                    .get(kind)
                    .and_then(|m| m.get("memory"))
                    .and_then(Value::as_str)
                    .and_then(|s| parse_bytes(s).ok())
            };
            if let (Some(req), Some(lim)) = (mem("requests"), mem("limits"))
                && req > lim
            {
                return Err(invalid(
                    &format!("{path}.requests"),
                    format!("{req}: must be less than or equal to memory limit of {lim}"),
                ));
            }
            Ok(())
        };
        match def.kind {
            "InferenceService" => {
                let predictor = obj["spec"]
                    .get("predictor")
                    .filter(|p| p.is_object())
                    .ok_or_else(|| {
                        invalid(
                            "spec.predictor",
                            "Required value: a predictor is required".into(),
                        )
                    })?;
                for f in ["minReplicas", "maxReplicas"] {
                    if let Some(v) = predictor.get(f)
                        && v.as_i64().is_none_or(|n| n < 0)
                    {
                        return Err(invalid(
                            &format!("spec.predictor.{f}"),
                            format!("{v}: must be greater than or equal to 0"),
                        ));
                    }
                }
                if let (Some(min), Some(max)) = (
                    predictor.get("minReplicas").and_then(Value::as_i64),
                    predictor.get("maxReplicas").and_then(Value::as_i64),
                ) && max != 0
                    && max < min
                {
                    return Err(invalid(
                        "spec.predictor.maxReplicas",
                        format!("{max}: must be greater than or equal to minReplicas ({min})"),
                    ));
                }
                if let Some(cs) = predictor.get("containers").and_then(Value::as_array) {
                    for (i, c) in cs.iter().enumerate() {
                        if c.get("image")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                            && i == 0
                            && predictor.get("model").is_none()
                        {
                            return Err(invalid(
                                &format!("spec.predictor.containers[{i}].image"),
                                "Required value".into(),
                            ));
                        }
                        if let Some(r) = c.get("resources") {
                            check_resources(
                                &format!("spec.predictor.containers[{i}].resources"),
                                r,
                            )?;
                        }
                    }
                }
                if let Some(r) = predictor.get("model").and_then(|m| m.get("resources")) {
                    check_resources("spec.predictor.model.resources", r)?;
                }
            }
            "Pod" => {
                let cs = obj["spec"]["containers"]
                    .as_array()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| invalid("spec.containers", "Required value".into()))?;
                for (i, c) in cs.iter().enumerate() {
                    if c.get("name")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(invalid(
                            &format!("spec.containers[{i}].name"),
                            "Required value".into(),
                        ));
                    }
                    if let Some(r) = c.get("resources") {
                        check_resources(&format!("spec.containers[{i}].resources"), r)?;
                    }
                }
            }
            "ResourceQuota" => {
                if let Some(m) = obj["spec"].get("hard").and_then(Value::as_object) {
                    for (res, v) in m {
                        let text = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        if parse_quantity(&text).is_err() {
                            return Err(invalid(
                                &format!("spec.hard[{res}]"),
                                format!("{text:?}: must be a quantity"),
                            ));
                        }
                    }
                }
            }
            "Application"
                if obj["spec"]["destination"]
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_none() =>
            {
                return Err(invalid(
                    "spec.destination.namespace",
                    "Required value".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Admission for pods created through the API: quota, LimitRange, Kyverno.
    fn admit(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: &mut Value,
    ) -> Result<(), ApiError> {
        if *def != resources::PODS {
            return Ok(());
        }
        self.admit_pod(ns, body).map_err(|msg| {
            ApiError::forbidden(
                Some(def),
                name,
                format!("pods {name:?} is forbidden: {msg}"),
            )
        })
    }

    // ---- the request log ----

    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        api: &'static str,
        verb: &str,
        resource: String,
        subresource: Option<String>,
        namespace: &str,
        name: &str,
        caller: &Caller,
        patch_type: Option<PatchType>,
        body: Value,
        status: u16,
    ) {
        let elapsed = self.clock.elapsed();
        let seq = self.log.len() as u64 + 1;
        self.log.push(RequestRecord {
            seq,
            at: now_ts(&self.clock),
            elapsed: format_duration(elapsed),
            elapsed_ms: elapsed.as_millis() as u64,
            api,
            verb: verb.to_owned(),
            resource,
            subresource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dry_run: caller.dry_run,
            field_manager: caller.field_manager.clone(),
            patch_type: patch_type.map(|p| p.name().to_owned()),
            user_agent: caller.user_agent.clone(),
            body,
            status,
        });
    }

    pub fn requests(&self) -> &[RequestRecord] {
        &self.log
    }

    pub fn clear_requests(&mut self) {
        self.log.clear();
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

fn remove_path(obj: &mut Value, path: &str) {
    let segs: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        match cur.get_mut(*s) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(*last);
    }
}
