//! KServe's autoscaler (the HPA of a raw deployment): the predictor runs as many replicas as
//! the load asks for, between `spec.predictor.minReplicas` and `maxReplicas`. The bounds are
//! not part of the pod template, so changing them makes no new revision.

use serde_json::{Value, json};

use crate::{resources, world::World};

impl World {
    /// The replicas the autoscaler runs: `min_replicas` without load, else the load's demand
    /// within `[minReplicas, maxReplicas]` (a missing or lower maxReplicas is minReplicas).
    pub(super) fn autoscaled_replicas(
        &self,
        ns: &str,
        name: &str,
        isvc: &Value,
        min_replicas: u32,
    ) -> u32 {
        let Some(demand) = self.demand.get(&(ns.to_owned(), name.to_owned())) else {
            return min_replicas;
        };
        let max = isvc["spec"]["predictor"]["maxReplicas"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(min_replicas)
            .max(min_replicas);
        (*demand).clamp(min_replicas, max)
    }

    /// The load asks for `demand` replicas; the autoscaler's bound is `max_replicas`.
    pub(super) fn saturate(&mut self, ns: &str, name: &str, max_replicas: u32, demand: u32) {
        let Some(mut isvc) = self
            .get_obj(&resources::INFERENCE_SERVICES, ns, name)
            .cloned()
        else {
            return;
        };
        isvc["spec"]["predictor"]["maxReplicas"] = json!(max_replicas);
        self.demand.insert((ns.to_owned(), name.to_owned()), demand);
        self.put(&resources::INFERENCE_SERVICES, ns, name, isvc);
    }
}
