//! The scheduler's GPU accounting: once a `gpu_shortage` gives the cluster a number of GPU
//! nodes, a pod requesting `nvidia.com/gpu` is bound only while that many GPUs are free; else it
//! stays Pending with `PodScheduled=False` (`Unschedulable`) and a `FailedScheduling` event, as
//! kube-scheduler reports it. Bound pods keep their GPUs until they end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{resources, world::World};

use super::{event, event_name};

/// How often kube-scheduler retries an unschedulable pod (its backoff caps near this).
const RETRY: Duration = Duration::from_secs(30);

/// kube-scheduler's message when no node has the GPUs.
fn insufficient_gpu(nodes: u32) -> String {
    format!(
        "0/{nodes} nodes are available: {nodes} Insufficient nvidia.com/gpu. preemption: 0/{nodes} nodes are available: {nodes} No preemption victims found for incoming pod."
    )
}

impl World {
    /// From now the cluster has `nodes` × `gpus_per_node` GPUs; every running pod keeps its.
    pub(super) fn limit_gpus(&mut self, nodes: u32, gpus_per_node: u32) {
        self.gpu_nodes = Some((nodes, gpus_per_node));
        let running: Vec<usize> = (0..self.pod_lives.len())
            .filter(|l| self.pod_lives[*l].end.is_none() && self.pod_lives[*l].gpu > 0)
            .collect();
        self.gpu_bound.extend(running);
    }

    /// Binds the pod of life `life` when its GPUs are free; the scheduler's message when not.
    fn bind_gpus(&mut self, life: usize) -> Option<String> {
        let (nodes, per_node) = self.gpu_nodes?;
        let wanted = self.pod_lives.get(life)?.gpu;
        if wanted == 0 || self.gpu_bound.contains(&life) {
            return None;
        }
        let used: u32 = self
            .gpu_bound
            .iter()
            .filter_map(|l| self.pod_lives.get(*l))
            .filter(|l| l.end.is_none())
            .map(|l| l.gpu)
            .sum();
        if wanted <= per_node && used + wanted <= nodes * per_node {
            self.gpu_bound.insert(life);
            return None;
        }
        Some(insufficient_gpu(nodes))
    }

    /// Writes the status and the `FailedScheduling` event of a pod that cannot be bound;
    /// `Some(message)` when it is unschedulable.
    pub(super) fn schedule(
        &mut self,
        ns: &str,
        pod: &mut Value,
        life: usize,
        created: Duration,
        now: Duration,
    ) -> Option<String> {
        let message = self.bind_gpus(life)?;
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
        pod["status"] = json!({
            "phase": "Pending",
            "qosClass": "Burstable",
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": self.ts(created),
            }],
        });
        let attempts = 1 + (now.saturating_sub(created).as_secs() / RETRY.as_secs()) as u32;
        let mut ev = event(
            ns,
            json!({"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns, "uid": pod["metadata"]["uid"]}),
            "FailedScheduling",
            message.clone(),
            "Warning",
            attempts,
            self.ts(created),
            self.ts(now),
            "default-scheduler",
        );
        ev["source"] = json!({"component": "default-scheduler"});
        ev["reportingInstance"] = json!("default-scheduler");
        self.put(
            &resources::EVENTS,
            ns,
            &event_name(&name, "FailedScheduling"),
            ev,
        );
        Some(message)
    }
}
