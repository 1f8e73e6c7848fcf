//! Injected faults: when each begins and what it does to the cluster.

use std::time::Duration;

use serde_json::json;

use opsmesh_proto::Target;

use crate::{
    resources,
    scenario::{Api, Fault, PolicyAction},
    world::{FaultState, World},
};

use super::kserve::template_of;

impl World {
    pub fn inject(&mut self, at: Duration, fault: Fault, target: Option<Target>) {
        self.faults.push(FaultState {
            at,
            fault,
            target,
            applied: false,
            cleared_at: None,
            crashing_image: None,
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

    /// Someone scales the InferenceService to `replicas` (`minReplicas`, and `maxReplicas`
    /// when it is lower).
    fn scale_to(&mut self, ns: &str, name: &str, replicas: u32) {
        if let Some(mut isvc) = self
            .get_obj(&resources::INFERENCE_SERVICES, ns, name)
            .cloned()
        {
            isvc["spec"]["predictor"]["minReplicas"] = json!(replicas);
            if let Some(max) = isvc["spec"]["predictor"]["maxReplicas"].as_u64() {
                isvc["spec"]["predictor"]["maxReplicas"] = json!(max.max(u64::from(replicas)));
            }
            self.put(&resources::INFERENCE_SERVICES, ns, name, isvc);
        }
    }

    pub(super) fn activate_faults(&mut self, now: Duration) {
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
                Fault::CostSpike { replicas } => self.scale_to(&ns, &name, *replicas),
                Fault::GitopsDrift => {
                    if let Some(Target::Application { name: app, .. }) = &f.target {
                        self.drift(app);
                    }
                }
                Fault::CanaryRegression {
                    image,
                    traffic_percent,
                } => self.start_canary(&ns, &name, image, *traffic_percent),
                Fault::AutoscalerSaturated {
                    max_replicas,
                    demand,
                } => self.saturate(&ns, &name, *max_replicas, *demand),
                Fault::GpuShortage {
                    nodes,
                    gpus_per_node,
                    replicas,
                } => {
                    self.limit_gpus(*nodes, *gpus_per_node);
                    self.scale_to(&ns, &name, *replicas);
                }
                Fault::ModelLoadFailure { storage_uri } => {
                    self.point_at_missing_model(&ns, &name, storage_uri)
                }
                Fault::MissingReference {
                    kind,
                    name: object,
                    key,
                    env,
                } => self.reference_missing_object(&ns, &name, (*kind, object, key, env)),
                Fault::CrashLoop {
                    persistent: true, ..
                } => {
                    let image = self
                        .get_obj(&resources::INFERENCE_SERVICES, &ns, &name)
                        .map(|isvc| template_of(isvc).image);
                    self.faults[i].crashing_image = image;
                }
                Fault::ApiOutage { .. }
                | Fault::OomLoop { .. }
                | Fault::CrashLoop { .. }
                | Fault::None => {}
            }
        }
    }

    pub(super) fn restarted(&mut self, ns: &str, name: &str, now: Duration) {
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
}
