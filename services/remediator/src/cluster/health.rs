//! Health checks after an action: the InferenceService's readiness and its predictor
//! containers, the namespace guard's presence, the ArgoCD application's sync and health.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};

use opsmesh_proto::{ActionKind, remediation::ActionRecord};

use super::{
    ActError, Cluster, LIMIT_RANGE_NAME, QUOTA_NAME, inference_service::ISVC_LABEL, kube_error,
    namespace_of, param_str,
};

/// One health check's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub healthy: bool,
    pub detail: String,
    /// Ready predictor containers (InferenceService actions): what a remediation ladder
    /// compares before and after a step to tell whether it made things worse.
    pub ready_containers: Option<u64>,
}

/// Whether an InferenceService's `Ready` condition is `True`.
pub(super) fn is_ready(isvc: &serde_json::Value) -> bool {
    isvc["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

impl Cluster {
    /// The health of what `a` acted on.
    pub async fn check(&self, a: &ActionRecord) -> Result<Health, ActError> {
        match a.kind {
            ActionKind::PatchMemoryLimit
            | ActionKind::RollbackImage
            | ActionKind::ScaleInferenceService
            | ActionKind::RestartInferenceService
            | ActionKind::RollbackStorageUri => {
                let (ns, name) = Self::isvc_target(a)?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let ready = is_ready(&isvc);
                let pods = Api::<Pod>::namespaced(self.client()?.clone(), &ns)
                    .list(&ListParams::default().labels(&format!("{ISVC_LABEL}={name}")))
                    .await
                    .map_err(|e| kube_error("list pods", e))?;
                let mut problems = Vec::new();
                let mut ready_pods = 0;
                for pod in &pods.items {
                    let status = pod.status.as_ref();
                    for cs in status
                        .and_then(|s| s.container_statuses.as_ref())
                        .into_iter()
                        .flatten()
                    {
                        if cs.ready {
                            ready_pods += 1;
                        }
                        let terminated = [cs.state.as_ref(), cs.last_state.as_ref()]
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.terminated.as_ref())
                            .filter_map(|t| t.reason.clone());
                        for reason in terminated {
                            if a.kind == ActionKind::PatchMemoryLimit && reason == "OOMKilled" {
                                problems.push(format!("{} OOMKilled", cs.name));
                            }
                        }
                        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
                            && let Some(reason) = &w.reason
                            && reason != "ContainerCreating"
                        {
                            problems.push(format!("{} waiting: {reason}", cs.name));
                        }
                        if a.kind == ActionKind::RollbackImage
                            && let Some(want) = param_str(a, "image")
                            && cs.image != want
                        {
                            problems.push(format!("{} runs {}", cs.name, cs.image));
                        }
                    }
                }
                problems.sort();
                problems.dedup();
                let healthy = ready && problems.is_empty();
                Ok(Health {
                    healthy,
                    ready_containers: Some(ready_pods),
                    detail: format!(
                        "{ns}/{name}: Ready={}, {ready_pods}/{} predictor containers ready{}",
                        if ready { "True" } else { "False" },
                        pods.items.len(),
                        if problems.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", problems.join(", "))
                        }
                    ),
                })
            }
            ActionKind::ApplyResourceQuota => {
                let ns = namespace_of(a)?;
                let present = self.is_done(a, "").await?;
                Ok(Health {
                    healthy: present,
                    ready_containers: None,
                    detail: format!(
                        "{ns}: {QUOTA_NAME} and {LIMIT_RANGE_NAME} {}",
                        if present {
                            "present"
                        } else {
                            "missing or different"
                        }
                    ),
                })
            }
            ActionKind::ArgocdSync => {
                let app = self.argo_app(a).await?;
                let sync = app["status"]["sync"]["status"]
                    .as_str()
                    .unwrap_or("Unknown");
                let health = app["status"]["health"]["status"]
                    .as_str()
                    .unwrap_or("Unknown");
                Ok(Health {
                    healthy: sync == "Synced" && health == "Healthy",
                    ready_containers: None,
                    detail: format!("{}: sync {sync}, health {health}", a.target),
                })
            }
            ActionKind::SetCanaryTraffic => self.canary_health(a).await,
            ActionKind::RaiseMaxReplicas => self.max_replicas_health(a).await,
            ActionKind::AdviseCapacity | ActionKind::SuggestPolicyFix | ActionKind::Escalate => {
                Ok(Health {
                    healthy: true,
                    ready_containers: None,
                    detail: "nothing to check".into(),
                })
            }
        }
    }
}
