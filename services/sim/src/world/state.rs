//! The state the controllers keep beside the objects: workloads and their pods, pod lives (for
//! OpenCost), injected faults and ArgoCD's view of its Applications.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use opsmesh_proto::Target;

use crate::{
    duration::format_duration,
    scenario::{Fault, HealthStatus},
};

/// A pod's life, for OpenCost.
#[derive(Debug, Clone)]
pub struct PodLife {
    pub namespace: String,
    pub pod: String,
    pub controller: Option<String>,
    pub start: Duration,
    pub end: Option<Duration>,
    /// How long before `start` the pod's slot already ran (a pod of the scenario's initial
    /// state stands for a workload that ran before the simulation began).
    pub ran_before: Duration,
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
    /// The image a persistent crash loop belongs to (the one running when it began): pods of
    /// another image start cleanly, so rolling back to an earlier image ends it.
    pub crashing_image: Option<String>,
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
