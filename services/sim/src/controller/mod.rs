//! The controllers of the simulated cluster, each a set of `World` methods in its own module
//! working on the world's store: KServe (predictor pods follow the InferenceService), the kubelet
//! (restarts, back-off, OOM kills, image pulls), admission (ResourceQuota, LimitRange), Kyverno
//! (policies and their reports), ArgoCD (comparison, sync, rollback) and the injected faults —
//! all as functions of the virtual clock.
//!
//! The dependency runs one way: controllers read and write the world's store (`get_obj`, `put`,
//! `remove`, `objects_of`) and the state types in `world`; the world imports nothing from here
//! and calls in at three points only — [`World::reconcile`], and `admit_pod` / `pod_written`
//! for pods written through the API.

mod admission;
mod argocd;
mod autoscaler;
mod canary;
mod deployment;
mod faults;
mod kserve;
mod kubelet;
mod kyverno;
mod metrics;
mod references;
mod scheduler;
mod storage;

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{clock::timestamp, resources, world::World};

use admission::{Demand, pod_demand};

const EVENT_TTL: Duration = Duration::from_secs(3600);
const CONTAINER: &str = "kserve-container";
const NODE: &str = "sim-node-1";
pub const ISVC_LABEL: &str = "serving.kserve.io/inferenceservice";
pub const ARGO_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub use deployment::REVISION_ANNOTATION;
pub use kserve::RESTARTED_AT_ANNOTATION;

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

/// The rule of a Kyverno policy that denies: named alike in admission denials and in the
/// policy reports.
fn rule_name(policy: &str) -> String {
    if policy.contains("root") {
        "check-runasnonroot".into()
    } else {
        format!("validate-{policy}")
    }
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
            if let Some(wl) = self.workloads.remove(&(ns.clone(), name.clone())) {
                for pod in wl.pods {
                    self.delete_pod(&ns, &pod, now);
                }
            }
            self.remove_deployment(&ns, &name);
        }
        for (ns, name) in isvcs {
            self.reconcile_isvc(&ns, &name, now);
        }
        self.prune_pod_metrics();
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
}
