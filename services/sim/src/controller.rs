//! The controllers of the simulated cluster: KServe (predictor pods follow the
//! InferenceService), the kubelet (restarts, back-off, OOM kills, image pulls), admission
//! (ResourceQuota, LimitRange, Kyverno), Kyverno's reports, ArgoCD's comparison, and the
//! injected faults — all as functions of the virtual clock.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use opsmesh_proto::{
    Target,
    quantity::{format_bytes, json_quantity},
};

use crate::{
    clock::timestamp,
    duration::format_duration,
    resources,
    scenario::{Api, Fault, HealthStatus, PolicyAction},
    world::{PodLife, World},
};

/// How long a crashing container runs before it dies: a model OOMs while loading, a broken
/// entrypoint exits at once.
const OOM_RUN: Duration = Duration::from_secs(20);
const CRASH_RUN: Duration = Duration::from_secs(2);
const PULL_ATTEMPT: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const EVENT_TTL: Duration = Duration::from_secs(3600);
const CONTAINER: &str = "kserve-container";
const NODE: &str = "sim-node-1";
pub const ISVC_LABEL: &str = "serving.kserve.io/inferenceservice";
pub const ARGO_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const RESTART_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/restartedAt",
    "serving.kserve.io/restartedAt",
    "opsmesh.dev/restartedAt",
];

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

    fn targets_isvc(&self, ns: &str, name: &str) -> bool {
        matches!(&self.target, Some(Target::InferenceService { namespace, name: n }) if namespace == ns && n == name)
    }
}

#[derive(Debug, Clone)]
pub struct SimPod {
    pub name: String,
    pub created: Duration,
    pub image: String,
    pub memory_limit: Option<u64>,
    life: usize,
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

/// Resources a pod asks for, summed over containers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Demand {
    pub memory_limit: u64,
    pub memory_request: u64,
    pub gpu: u64,
    pub cpu_request: f64,
    /// Per container: memory limit.
    pub container_limits: Vec<Option<u64>>,
}

pub fn pod_demand(pod: &Value) -> Demand {
    let mut d = Demand::default();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let r = &c["resources"];
        let lim = r["limits"]
            .get("memory")
            .and_then(json_quantity)
            .map(|v| v as u64);
        let req = r["requests"]
            .get("memory")
            .and_then(json_quantity)
            .map(|v| v as u64)
            .or(lim);
        d.memory_limit += lim.unwrap_or(0);
        d.memory_request += req.unwrap_or(0);
        d.gpu += r["limits"]
            .get("nvidia.com/gpu")
            .and_then(json_quantity)
            .or_else(|| r["requests"].get("nvidia.com/gpu").and_then(json_quantity))
            .unwrap_or(0.0) as u64;
        d.cpu_request += r["requests"]
            .get("cpu")
            .and_then(json_quantity)
            .or_else(|| r["limits"].get("cpu").and_then(json_quantity))
            .unwrap_or(0.0);
        d.container_limits.push(lim);
    }
    d
}

/// The predictor pod an InferenceService asks for.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub container: Value,
    pub security_context: Option<Value>,
    pub image: String,
    pub replicas: u32,
    pub hash: String,
}

pub(crate) fn template_of(isvc: &Value) -> Template {
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
        for f in ["minReplicas", "maxReplicas", "scaleTarget", "scaleMetric"] {
            m.remove(f);
        }
    }
    let restart: Vec<Value> = RESTART_ANNOTATIONS
        .iter()
        .map(|a| {
            isvc["metadata"]["annotations"]
                .get(*a)
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect();
    let digest = Sha256::new()
        .chain_update(shape.to_string())
        .chain_update(json!(restart).to_string())
        .finalize();
    let hash = hex::encode(&digest[..5]);
    Template {
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
    fn satisfies(&self, policy: &str) -> bool {
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

/// A kubelet restart loop: the container runs `run` then dies, waits a doubling back-off.
#[derive(Debug, Clone, Copy, Default)]
struct Cycle {
    restarts: u32,
    crashes: u32,
    first_crash: Option<Duration>,
    last_crash: Option<Duration>,
    last_start: Duration,
    backoff: Option<Duration>,
}

fn cycle(elapsed: Duration, run: Duration) -> Cycle {
    let mut c = Cycle::default();
    let mut t = Duration::ZERO;
    loop {
        let crash = t + run;
        if crash > elapsed {
            c.last_start = t;
            return c;
        }
        c.crashes += 1;
        c.first_crash.get_or_insert(crash);
        c.last_crash = Some(crash);
        let backoff =
            (BACKOFF_START * 2u32.saturating_pow(c.crashes - 1).min(1 << 10)).min(BACKOFF_MAX);
        if crash + backoff > elapsed {
            c.last_start = t;
            c.backoff = Some(backoff);
            return c;
        }
        t = crash + backoff;
        c.restarts += 1;
    }
}

enum Mode {
    Healthy,
    ImagePull {
        since: Duration,
    },
    Crash {
        since: Duration,
        oom: bool,
        exit_code: i32,
    },
}

#[allow(clippy::too_many_arguments)]
fn event(
    ns: &str,
    involved: Value,
    reason: &str,
    message: String,
    kind: &str,
    count: u32,
    first: String,
    last: String,
    component: &str,
) -> Value {
    json!({
        "metadata": {"namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "count": count,
        "firstTimestamp": first,
        "lastTimestamp": last,
        "source": {"component": component, "host": NODE},
        "reportingComponent": component,
        "reportingInstance": NODE,
    })
}

fn event_name(object: &str, reason: &str) -> String {
    let digest = Sha256::new()
        .chain_update(object)
        .chain_update(reason)
        .finalize();
    let h = hex::encode(&digest[..8]);
    format!("{object}.{h}")
}

fn revision_sha(app: &str, n: u64) -> String {
    let digest = Sha256::new()
        .chain_update(app)
        .chain_update(n.to_le_bytes())
        .finalize();
    hex::encode(&digest[..20])
}

/// Default OpenCost price of one pod when the scenario gave none: GPUs dominate.
fn default_hourly(demand: &Demand) -> f64 {
    demand.gpu as f64 * 2.5 + demand.memory_request as f64 / (1u64 << 30) as f64 * 0.01 + 0.05
}

impl World {
    fn ts(&self, at: Duration) -> String {
        timestamp(self.clock.at(at))
    }

    /// Brings every derived object to the current virtual time.
    pub fn reconcile(&mut self) {
        let now = self.clock.elapsed();
        self.activate_faults(now);
        let isvcs: Vec<(String, String)> = self
            .objects_of(&resources::INFERENCE_SERVICES, None)
            .map(|o| {
                (
                    o["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                    o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let gone: Vec<(String, String)> = self
            .workloads
            .keys()
            .filter(|k| !isvcs.contains(k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            if let Some(wl) = self.workloads.remove(&(ns.clone(), name)) {
                for pod in wl.pods {
                    self.delete_pod(&ns, &pod, now);
                }
            }
        }
        for (ns, name) in isvcs {
            self.reconcile_isvc(&ns, &name, now);
        }
        self.reconcile_policy_reports(now);
        self.reconcile_quotas();
        self.reconcile_apps(now);
        self.expire_events(now);
    }

    /// Moves the clock to `elapsed`, stopping at each fault's onset on the way.
    pub fn advance_to(&mut self, elapsed: Duration) {
        let mut stops: Vec<Duration> = self
            .faults
            .iter()
            .filter(|f| !f.applied && f.at <= elapsed)
            .map(|f| f.at)
            .collect();
        stops.sort();
        for t in stops {
            self.clock.advance_to(t);
            self.reconcile();
        }
        self.clock.advance_to(elapsed);
        self.reconcile();
    }

    pub fn inject(&mut self, at: Duration, fault: Fault, target: Option<Target>) {
        self.faults.push(FaultState {
            at,
            fault,
            target,
            applied: false,
            cleared_at: None,
            began: None,
        });
    }

    /// How much longer `api` stays down, if an `api_outage` covers it now.
    pub fn outage(&self, api: Api) -> Option<Duration> {
        let now = self.clock.elapsed();
        self.faults
            .iter()
            .filter_map(|f| match &f.fault {
                Fault::ApiOutage {
                    duration,
                    apis,
                    after_write,
                } if apis.contains(&api) => {
                    // Computed from the clock rather than set by `reconcile`: a scaled clock
                    // (`opsmesh sim`) moves between reconciliations.
                    let began = if *after_write { f.began? } else { f.at };
                    let end = began + *duration;
                    (began <= now && now < end).then(|| end - now)
                }
                _ => None,
            })
            .max()
    }

    /// A write the Kubernetes API accepted: starts the `after_write` outages that are due.
    pub fn note_write(&mut self) {
        let now = self.clock.elapsed();
        for f in &mut self.faults {
            if let Fault::ApiOutage {
                after_write: true, ..
            } = f.fault
                && f.at <= now
                && f.began.is_none()
            {
                tracing::debug!(at = ?now, "api outage begins after a write");
                f.began = Some(now);
            }
        }
    }

    fn activate_faults(&mut self, now: Duration) {
        for i in 0..self.faults.len() {
            if self.faults[i].applied || self.faults[i].at > now {
                continue;
            }
            self.faults[i].applied = true;
            let f = self.faults[i].clone();
            let (ns, name) = match &f.target {
                Some(Target::InferenceService { namespace, name }) => {
                    (namespace.clone(), name.clone())
                }
                _ => (String::new(), String::new()),
            };
            tracing::debug!(fault = f.fault.name(), ?f.target, "fault begins");
            match &f.fault {
                Fault::ImagePullError => {
                    if let Some(isvc) = self.get_obj(&resources::INFERENCE_SERVICES, &ns, &name) {
                        let image = template_of(isvc).image;
                        self.bad_images.insert((ns.clone(), name.clone(), image));
                        self.force_rollout(&ns, &name);
                    }
                }
                Fault::PolicyDenial { policy, .. } => {
                    if !self.policies.contains_key(policy) {
                        self.add_policy(policy, PolicyAction::Enforce);
                    }
                    if self.policies.get(policy) == Some(&PolicyAction::Enforce) {
                        self.force_rollout(&ns, &name);
                    }
                }
                Fault::CostSpike { replicas } => {
                    if let Some(mut isvc) = self
                        .get_obj(&resources::INFERENCE_SERVICES, &ns, &name)
                        .cloned()
                    {
                        isvc["spec"]["predictor"]["minReplicas"] = json!(replicas);
                        if let Some(max) = isvc["spec"]["predictor"]["maxReplicas"].as_u64() {
                            isvc["spec"]["predictor"]["maxReplicas"] =
                                json!(max.max(u64::from(*replicas)));
                        }
                        self.put(&resources::INFERENCE_SERVICES, &ns, &name, isvc);
                    }
                }
                Fault::GitopsDrift => {
                    if let Some(Target::Application { name: app, .. }) = &f.target {
                        self.drift(app);
                    }
                }
                Fault::ApiOutage { .. }
                | Fault::OomLoop { .. }
                | Fault::CrashLoop { .. }
                | Fault::None => {}
            }
        }
    }

    fn force_rollout(&mut self, ns: &str, name: &str) {
        if let Some(wl) = self.workloads.get_mut(&(ns.to_owned(), name.to_owned())) {
            wl.template_hash = "rollout".into();
        }
    }

    pub(crate) fn add_policy(&mut self, name: &str, action: PolicyAction) {
        self.policies.insert(name.to_owned(), action);
        let rule = rule_name(name);
        let failure_action = match action {
            PolicyAction::Enforce => "Enforce",
            PolicyAction::Audit => "Audit",
        };
        self.put(
            &resources::CLUSTER_POLICIES,
            "",
            name,
            json!({
                "metadata": {"annotations": {"policies.kyverno.io/category": "Pod Security Standards (Restricted)", "policies.kyverno.io/severity": "medium"}},
                "spec": {
                    "validationFailureAction": failure_action,
                    "background": true,
                    "rules": [{"name": rule, "match": {"any": [{"resources": {"kinds": ["Pod"]}}]}, "validate": {"message": format!("{name}: validation failed")}}],
                },
                "status": {"ready": true, "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}]},
            }),
        );
    }

    fn drift(&mut self, app: &str) {
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

    /// An external write to a pod (deletion is noticed by the controller on its next pass).
    pub(crate) fn pod_written(&mut self, ns: &str, name: &str) {
        let now = self.clock.elapsed();
        let Some(pod) = self.get_obj(&resources::PODS, ns, name).cloned() else {
            if let Some(life) = self
                .pod_lives
                .iter_mut()
                .find(|l| l.namespace == ns && l.pod == name && l.end.is_none())
            {
                life.end = Some(now);
            }
            return;
        };
        if pod["metadata"]["labels"].get(ISVC_LABEL).is_some() {
            return;
        }
        if !self
            .pod_lives
            .iter()
            .any(|l| l.namespace == ns && l.pod == name && l.end.is_none())
        {
            let demand = pod_demand(&pod);
            self.pod_lives.push(PodLife {
                namespace: ns.to_owned(),
                pod: name.to_owned(),
                controller: None,
                start: now,
                end: None,
                hourly_usd: default_hourly(&demand),
                gpu: demand.gpu as u32,
                memory_bytes: demand.memory_request,
            });
            let mut pod = pod;
            pod["status"] = json!({"phase": "Running", "startTime": self.ts(now), "conditions": [{"type": "Ready", "status": "True"}]});
            self.put(&resources::PODS, ns, name, pod);
        }
    }

    fn delete_pod(&mut self, ns: &str, pod: &SimPod, now: Duration) {
        self.remove(&resources::PODS, ns, &pod.name);
        if let Some(life) = self.pod_lives.get_mut(pod.life) {
            life.end.get_or_insert(now);
        }
    }

    fn restarted(&mut self, ns: &str, name: &str, now: Duration) {
        for f in &mut self.faults {
            if f.applied
                && f.cleared_at.is_none()
                && f.at <= now
                && matches!(
                    f.fault,
                    Fault::CrashLoop {
                        persistent: false,
                        ..
                    }
                )
                && f.targets_isvc(ns, name)
            {
                f.cleared_at = Some(now);
            }
        }
    }

    fn reconcile_isvc(&mut self, ns: &str, name: &str, now: Duration) {
        let Some(isvc) = self
            .get_obj(&resources::INFERENCE_SERVICES, ns, name)
            .cloned()
        else {
            return;
        };
        let template = template_of(&isvc);
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
        let mut block = None;
        while wl.pods.len() < template.replicas as usize {
            match self.create_predictor_pod(ns, name, &isvc, &template, &mut wl, now) {
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
        let rs_name = format!("{name}-predictor-{}", template.hash);
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
        isvc: &Value,
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
        let pod_name = format!("{name}-predictor-{}-{suffix}", t.hash);
        let mut spec = json!({"containers": [t.container.clone()], "nodeName": NODE, "restartPolicy": "Always"});
        if let Some(sc) = &t.security_context {
            spec["securityContext"] = sc.clone();
        }
        let mut pod = json!({
            "metadata": {
                "labels": {ISVC_LABEL: name, "component": "predictor", "app": format!("{name}-predictor"), "pod-template-hash": t.hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-predictor-{}", t.hash), "uid": isvc["metadata"]["uid"], "controller": true}],
            },
            "spec": spec,
        });
        self.apply_limit_range_defaults(ns, &mut pod);
        let demand = pod_demand(&pod);
        let rs = format!("{name}-predictor-{}", t.hash);
        if let Some(msg) = self.limit_range_violation(ns, &demand) {
            return Err(Block::Admission(format!(
                "pods \"{rs}-\" is forbidden: {msg}"
            )));
        }
        if let Some(msg) = self.quota_violation(ns, &demand) {
            return Err(Block::Admission(format!(
                "pods \"{rs}-\" is forbidden: {msg}"
            )));
        }
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

    fn mode_of(&self, ns: &str, isvc: &str, pod: &SimPod) -> Mode {
        if self
            .bad_images
            .contains(&(ns.to_owned(), isvc.to_owned(), pod.image.clone()))
        {
            return Mode::ImagePull { since: pod.created };
        }
        for f in &self.faults {
            if !f.applied || !f.targets_isvc(ns, isvc) {
                continue;
            }
            match &f.fault {
                Fault::CrashLoop {
                    persistent,
                    exit_code,
                } if *persistent || f.cleared_at.is_none_or(|c| pod.created < c) => {
                    return Mode::Crash {
                        since: pod.created.max(f.at),
                        oom: false,
                        exit_code: *exit_code,
                    };
                }
                Fault::OomLoop { memory_demand }
                    if pod.memory_limit.is_some_and(|l| l < *memory_demand) =>
                {
                    return Mode::Crash {
                        since: pod.created.max(f.at),
                        oom: true,
                        exit_code: 137,
                    };
                }
                _ => {}
            }
        }
        Mode::Healthy
    }

    /// Writes the pod's status and its kubelet events; returns (ready, why not).
    fn update_pod(
        &mut self,
        ns: &str,
        isvc: &str,
        pod: &SimPod,
        now: Duration,
    ) -> (bool, Option<String>) {
        let Some(mut obj) = self.get_obj(&resources::PODS, ns, &pod.name).cloned() else {
            return (false, None);
        };
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let involved = json!({"apiVersion": "v1", "kind": "Pod", "name": pod.name, "namespace": ns, "uid": uid, "fieldPath": format!("spec.containers{{{CONTAINER}}}")});
        let startup = self.config.pod_startup;
        let (phase, ready, restarts, state, last_state, reason) = match self.mode_of(ns, isvc, pod)
        {
            Mode::Healthy => {
                let ready = now.saturating_sub(pod.created) >= startup;
                (
                    "Running",
                    ready,
                    0,
                    json!({"running": {"startedAt": self.ts(pod.created)}}),
                    json!({}),
                    (!ready).then(|| "predictor starting".to_owned()),
                )
            }
            Mode::ImagePull { since } => {
                let c = cycle(now.saturating_sub(since), PULL_ATTEMPT);
                let attempts = c.crashes.max(1);
                let first = self.ts(since);
                let last = self.ts(since + c.last_crash.unwrap_or_default());
                let failed = event(
                    ns,
                    involved.clone(),
                    "Failed",
                    format!(
                        "Failed to pull image {:?}: rpc error: code = NotFound desc = failed to pull and unpack image {:?}: not found",
                        pod.image, pod.image
                    ),
                    "Warning",
                    attempts,
                    first.clone(),
                    last.clone(),
                    "kubelet",
                );
                self.put(
                    &resources::EVENTS,
                    ns,
                    &event_name(&pod.name, "Failed"),
                    failed,
                );
                let backoff = event(
                    ns,
                    involved.clone(),
                    "BackOff",
                    format!("Back-off pulling image {:?}", pod.image),
                    "Warning",
                    attempts,
                    first,
                    last,
                    "kubelet",
                );
                self.put(
                    &resources::EVENTS,
                    ns,
                    &event_name(&pod.name, "BackOff"),
                    backoff,
                );
                (
                    "Pending",
                    false,
                    0,
                    json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image {:?}", pod.image)}}),
                    json!({}),
                    Some("ImagePullBackOff".to_owned()),
                )
            }
            Mode::Crash {
                since,
                oom,
                exit_code,
            } => {
                let c = cycle(
                    now.saturating_sub(since),
                    if oom { OOM_RUN } else { CRASH_RUN },
                );
                let reason = if oom { "OOMKilled" } else { "Error" };
                let last_state = match c.last_crash {
                    Some(crash) => json!({"terminated": {
                        "reason": reason,
                        "exitCode": exit_code,
                        "startedAt": self.ts(since + c.last_start),
                        "finishedAt": self.ts(since + crash),
                        "containerID": format!("containerd://{}", &uid.replace('-', "")),
                    }}),
                    None => json!({}),
                };
                let state = match c.backoff {
                    Some(b) => {
                        json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off {} restarting failed container={CONTAINER} pod={}_{ns}({uid})", format_duration(b), pod.name)}})
                    }
                    None => json!({"running": {"startedAt": self.ts(since + c.last_start)}}),
                };
                if let (Some(first), Some(last)) = (c.first_crash, c.last_crash) {
                    let ev = event(
                        ns,
                        involved.clone(),
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {CONTAINER} in pod {}_{ns}({uid})",
                            pod.name
                        ),
                        "Warning",
                        c.crashes,
                        self.ts(since + first),
                        self.ts(since + last),
                        "kubelet",
                    );
                    self.put(
                        &resources::EVENTS,
                        ns,
                        &event_name(&pod.name, "BackOff"),
                        ev,
                    );
                }
                let why = if c.crashes == 0 {
                    "predictor starting".to_owned()
                } else if oom {
                    format!("container {CONTAINER} OOMKilled (exit code 137), CrashLoopBackOff")
                } else {
                    format!("container {CONTAINER} exited with code {exit_code}, CrashLoopBackOff")
                };
                ("Running", false, c.restarts, state, last_state, Some(why))
            }
        };
        let cond =
            |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }});
        obj["status"] = json!({
            "phase": phase,
            "hostIP": "10.0.0.11",
            "podIP": format!("10.244.0.{}", (pod.life % 250) + 2),
            "startTime": self.ts(pod.created),
            "qosClass": "Burstable",
            "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
            "containerStatuses": [{
                "name": CONTAINER,
                "image": pod.image,
                "imageID": if phase == "Pending" { String::new() } else { format!("{}@sha256:{}", pod.image.split(':').next().unwrap_or(""), "0".repeat(64)) },
                "ready": ready,
                "started": phase == "Running" && state.get("running").is_some(),
                "restartCount": restarts,
                "state": state,
                "lastState": last_state,
            }],
        });
        self.put(&resources::PODS, ns, &pod.name, obj);
        (ready, reason)
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

    pub(crate) fn apply_limit_range_defaults(&self, ns: &str, pod: &mut Value) {
        let ranges: Vec<Value> = self
            .objects_of(&resources::LIMIT_RANGES, Some(ns))
            .cloned()
            .collect();
        for lr in ranges {
            for limit in lr["spec"]["limits"].as_array().into_iter().flatten() {
                if limit["type"] != "Container" {
                    continue;
                }
                if let Some(cs) = pod["spec"]["containers"].as_array_mut() {
                    for c in cs {
                        for (field, kind) in [("default", "limits"), ("defaultRequest", "requests")]
                        {
                            if let Some(m) = limit[field].as_object() {
                                for (res, v) in m {
                                    if c["resources"][kind].get(res).is_none() {
                                        c["resources"][kind][res] = v.clone();
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn limit_range_violation(&self, ns: &str, demand: &Demand) -> Option<String> {
        for lr in self.objects_of(&resources::LIMIT_RANGES, Some(ns)) {
            for limit in lr["spec"]["limits"].as_array().into_iter().flatten() {
                if limit["type"] != "Container" {
                    continue;
                }
                let max = limit["max"]
                    .get("memory")
                    .and_then(json_quantity)
                    .map(|v| v as u64);
                let min = limit["min"]
                    .get("memory")
                    .and_then(json_quantity)
                    .map(|v| v as u64);
                for lim in demand.container_limits.iter().flatten() {
                    if let Some(max) = max
                        && *lim > max
                    {
                        return Some(format!(
                            "maximum memory usage per Container is {}, but limit is {}",
                            format_bytes(max),
                            format_bytes(*lim)
                        ));
                    }
                    if let Some(min) = min
                        && *lim < min
                    {
                        return Some(format!(
                            "minimum memory usage per Container is {}, but limit is {}",
                            format_bytes(min),
                            format_bytes(*lim)
                        ));
                    }
                }
            }
        }
        None
    }

    /// Resources used in a namespace, by quota resource name.
    fn quota_used(&self, ns: &str) -> BTreeMap<&'static str, f64> {
        let mut used = BTreeMap::new();
        for pod in self.objects_of(&resources::PODS, Some(ns)) {
            let d = pod_demand(pod);
            for (k, v) in quota_amounts(&d) {
                *used.entry(k).or_insert(0.0) += v;
            }
        }
        used
    }

    pub(crate) fn quota_violation(&self, ns: &str, demand: &Demand) -> Option<String> {
        let used = self.quota_used(ns);
        let asked = quota_amounts(demand);
        for q in self.objects_of(&resources::RESOURCE_QUOTAS, Some(ns)) {
            let qname = q["metadata"]["name"].as_str().unwrap_or("");
            for (res, hard) in q["spec"]["hard"].as_object().into_iter().flatten() {
                let Some(hard) = json_quantity(hard) else {
                    continue;
                };
                let Some((k, want)) = asked.iter().find(|(k, _)| *k == res.as_str()) else {
                    continue;
                };
                let have = used.get(k).copied().unwrap_or(0.0);
                if have + want > hard + 1e-9 {
                    let fmt = |v: f64| {
                        if k.contains("memory") {
                            format_bytes(v as u64)
                        } else {
                            format!("{v}")
                        }
                    };
                    return Some(format!(
                        "exceeded quota: {qname}, requested: {res}={}, used: {res}={}, limited: {res}={}",
                        fmt(*want),
                        fmt(have),
                        fmt(hard)
                    ));
                }
            }
        }
        None
    }

    fn reconcile_quotas(&mut self) {
        let quotas: Vec<Value> = self
            .objects_of(&resources::RESOURCE_QUOTAS, None)
            .cloned()
            .collect();
        for mut q in quotas {
            let ns = q["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
            let name = q["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let used = self.quota_used(&ns);
            let hard = q["spec"]["hard"].clone();
            let mut used_doc = json!({});
            for (res, _) in hard.as_object().into_iter().flatten() {
                let v = used.get(res.as_str()).copied().unwrap_or(0.0);
                used_doc[res] = json!(if res.contains("memory") {
                    format_bytes(v as u64)
                } else {
                    format!("{v}")
                });
            }
            let status = json!({"hard": hard, "used": used_doc});
            if q["status"] != status {
                q["status"] = status;
                self.put(&resources::RESOURCE_QUOTAS, &ns, &name, q);
            }
        }
    }

    fn reconcile_policy_reports(&mut self, now: Duration) {
        for f in self.faults.clone() {
            let (
                Fault::PolicyDenial {
                    policy,
                    resource,
                    reason,
                },
                Some(Target::InferenceService { namespace, name }),
            ) = (&f.fault, &f.target)
            else {
                continue;
            };
            if !f.applied {
                continue;
            }
            let Some(isvc) = self
                .get_obj(&resources::INFERENCE_SERVICES, namespace, name)
                .cloned()
            else {
                continue;
            };
            let t = template_of(&isvc);
            let satisfied = t.satisfies(policy);
            let action = self
                .policies
                .get(policy)
                .copied()
                .unwrap_or(PolicyAction::Enforce);
            let rule = rule_name(policy);
            let uid = isvc["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            let mut result = json!({
                "policy": policy,
                "rule": rule,
                "result": if satisfied { "pass" } else { "fail" },
                "message": if satisfied { format!("validation rule '{rule}' passed.") } else { format!("validation error: {reason}. rule {rule} failed") },
                "severity": "medium",
                "category": "Pod Security Standards (Restricted)",
                "source": "kyverno",
                "scored": true,
                "timestamp": {"seconds": self.clock.at(now).timestamp(), "nanos": 0},
                "properties": {"validationFailureAction": match action { PolicyAction::Enforce => "Enforce", PolicyAction::Audit => "Audit" }},
            });
            if let Some(r) = resource {
                let (kind, rname) = r.split_once('/').unwrap_or(("Pod", r));
                result["resources"] = json!([{"apiVersion": "v1", "kind": kind, "name": rname, "namespace": namespace}]);
            }
            let report = json!({
                "metadata": {"labels": {"app.kubernetes.io/managed-by": "kyverno"}},
                "scope": {"apiVersion": resources::INFERENCE_SERVICES.api_version(), "kind": "InferenceService", "name": name, "namespace": namespace, "uid": uid},
                "results": [result],
                "summary": {"pass": u32::from(satisfied), "fail": u32::from(!satisfied), "warn": 0, "error": 0, "skip": 0},
            });
            let report_name = if uid.is_empty() {
                format!("isvc-{name}")
            } else {
                uid
            };
            self.put(&resources::POLICY_REPORTS, namespace, &report_name, report);
            if action == PolicyAction::Audit && !satisfied {
                let ev = event(
                    namespace,
                    json!({"apiVersion": resources::INFERENCE_SERVICES.api_version(), "kind": "InferenceService", "name": name, "namespace": namespace}),
                    "PolicyViolation",
                    format!("policy {policy}/{rule} fail: {reason}"),
                    "Warning",
                    1,
                    self.ts(f.at),
                    self.ts(f.at),
                    "kyverno-scan",
                );
                self.put(
                    &resources::EVENTS,
                    namespace,
                    &event_name(name, "PolicyViolation"),
                    ev,
                );
            }
        }
    }

    fn reconcile_apps(&mut self, now: Duration) {
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

    fn expire_events(&mut self, now: Duration) {
        let cutoff = self.clock.at(now.saturating_sub(EVENT_TTL));
        let old: Vec<(String, String)> = self
            .objects_of(&resources::EVENTS, None)
            .filter(|e| {
                e["lastTimestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t < cutoff)
            })
            .map(|e| {
                (
                    e["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                    e["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        if now > EVENT_TTL {
            for (ns, name) in old {
                self.remove(&resources::EVENTS, &ns, &name);
            }
        }
    }

    // ---- ArgoCD operations ----

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

fn rule_name(policy: &str) -> String {
    if policy.contains("root") {
        "check-runasnonroot".into()
    } else {
        format!("validate-{policy}")
    }
}

fn quota_amounts(d: &Demand) -> Vec<(&'static str, f64)> {
    vec![
        ("pods", 1.0),
        ("count/pods", 1.0),
        ("requests.memory", d.memory_request as f64),
        ("memory", d.memory_request as f64),
        ("limits.memory", d.memory_limit as f64),
        ("requests.nvidia.com/gpu", d.gpu as f64),
        ("limits.nvidia.com/gpu", d.gpu as f64),
        ("requests.cpu", d.cpu_request),
        ("cpu", d.cpu_request),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_backoff() {
        let c = cycle(Duration::from_secs(300), OOM_RUN);
        // crash at 20 (+10), 50 (+20), 90 (+40), 150 (+80), 250 (+160 > 300)
        assert_eq!(c.crashes, 5);
        assert_eq!(c.restarts, 4);
        assert!(c.backoff.is_some());
        assert_eq!(cycle(Duration::from_secs(5), OOM_RUN).crashes, 0);
    }
}
