//! metrics-server: `metrics.k8s.io/v1beta1` PodMetrics, what `kubectl top` reads. A running
//! predictor container reports its working set; one that is not running (back-off, pulling,
//! waiting) has no sample. A container the kernel kills at its limit reports usage near that
//! limit, never the demand above it.

use std::time::Duration;

use serde_json::json;

use crate::{
    resources,
    scenario::Fault,
    world::{SimPod, World},
};

use super::CONTAINER;

/// What a healthy model server uses of its limit when no fault says what it needs.
const HEALTHY_SHARE: f64 = 0.5;
/// How close to its limit a container's last sample is before the kernel kills it.
const KILLED_AT: f64 = 0.98;
/// Working set of a container without a memory limit and without a known demand.
const UNLIMITED_DEFAULT: u64 = 512 << 20;

impl World {
    /// The working set a predictor container shows now: the demand an `oom_loop` fault gives
    /// the model (capped near its limit: the kernel kills it there), else half its limit.
    fn working_set(&self, ns: &str, isvc: &str, pod: &SimPod) -> u64 {
        let demand = self
            .faults
            .iter()
            .filter(|f| f.applied && f.targets_isvc(ns, isvc))
            .find_map(|f| match f.fault {
                Fault::OomLoop { memory_demand } => Some(memory_demand),
                _ => None,
            });
        match (demand, pod.memory_limit) {
            (Some(d), Some(limit)) if d >= limit => (limit as f64 * KILLED_AT) as u64,
            (Some(d), _) => d,
            (None, Some(limit)) => (limit as f64 * HEALTHY_SHARE) as u64,
            (None, None) => UNLIMITED_DEFAULT,
        }
    }

    /// Writes the pod's PodMetrics while its container runs, removes them when it does not.
    pub(super) fn write_pod_metrics(
        &mut self,
        ns: &str,
        isvc: &str,
        pod: &SimPod,
        running: bool,
        now: Duration,
    ) {
        if !running {
            self.remove(&resources::POD_METRICS, ns, &pod.name);
            return;
        }
        let labels = self
            .get_obj(&resources::PODS, ns, &pod.name)
            .map(|p| p["metadata"]["labels"].clone())
            .unwrap_or_default();
        let memory = self.working_set(ns, isvc, pod);
        let sample = json!({
            "metadata": {"labels": labels},
            // Scraped every 15 s, as metrics-server does.
            "timestamp": self.ts(Duration::from_secs(now.as_secs() / 15 * 15)),
            "window": "15s",
            "containers": [{"name": CONTAINER, "usage": {"cpu": "250m", "memory": format!("{}Ki", memory / 1024)}}],
        });
        self.put(&resources::POD_METRICS, ns, &pod.name, sample);
    }

    /// Drops the samples of pods that are gone.
    pub(super) fn prune_pod_metrics(&mut self) {
        let stale: Vec<(String, String)> = self
            .objects_of(&resources::POD_METRICS, None)
            .map(|m| {
                (
                    m["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                    m["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .filter(|(ns, name)| self.get_obj(&resources::PODS, ns, name).is_none())
            .collect();
        for (ns, name) in stale {
            self.remove(&resources::POD_METRICS, &ns, &name);
        }
    }
}
