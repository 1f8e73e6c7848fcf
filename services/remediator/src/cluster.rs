//! The actions on Kubernetes (kube-rs) and ArgoCD (REST). Every write is a server-side dry
//! run first, then the same request for real, under the field manager `opsmesh`; every write
//! sets absolute values (or an annotation keyed by the incident), so repeating one changes
//! nothing; and every action can tell whether its target is already in the wanted state, which
//! is how an interrupted action is resolved without running it twice. One module per
//! resource: [`inference_service`], [`quota`] (the namespace guard), [`argocd`]; the health
//! checks after an action in [`health`].

mod argocd;
mod autoscale;
mod canary;
mod health;
mod inference_service;
mod predictor_count;
mod quota;
mod storage_uri;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota};
use kube::{Api, Client, api::ListParams};
use serde_json::{Value, json};

use opsmesh_proto::{ActionKind, Target, quantity::parse_bytes, remediation::ActionRecord};
use opsmesh_runtime::secret::Secret;

use crate::{plan::valid_image, policy::OBSERVED_NAMESPACES};
use argocd::{ArgoCd, app_name, app_namespaces};
pub use health::Health;
use inference_service::{
    RESTARTED_AT, container_of, memory_patch, restart_patch, restarted_at, scale_patch,
};
use quota::{default_limits, settled_pods};

pub const QUOTA_NAME: &str = "opsmesh-cost-guard";
pub const LIMIT_RANGE_NAME: &str = "opsmesh-default-limits";

/// Why an action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Worth retrying: the API is unreachable, overloaded or timed out.
    #[error("{0}")]
    Transient(String),
    /// The API refused (forbidden, invalid, not found) or a guard failed: retrying cannot help.
    #[error("{0}")]
    Refused(String),
}

fn kube_error(what: &str, e: kube::Error) -> ActError {
    match &e {
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => {
            ActError::Transient(format!("{what}: {e}"))
        }
        kube::Error::Api(_) => ActError::Refused(format!("{what}: {e}")),
        _ => ActError::Transient(format!("{what}: {e}")),
    }
}

/// The remediator's hands: a Kubernetes client and an ArgoCD client.
pub struct Cluster {
    kube: Option<Client>,
    argocd: Option<ArgoCd>,
    field_manager: String,
}

fn param_str<'a>(a: &'a ActionRecord, name: &str) -> Option<&'a str> {
    a.params.get(name).and_then(Value::as_str)
}

fn param_u64(a: &ActionRecord, name: &str) -> Option<u64> {
    a.params
        .get(name)
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
}

/// Observed values recorded before a change, for rollback.
pub type Observed = BTreeMap<String, Value>;

impl Cluster {
    pub fn new(
        kube: Option<Client>,
        argocd: Option<(String, Secret<String>)>,
        field_manager: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let argocd = argocd
            .map(|(url, token)| ArgoCd::new(url, token, timeout))
            .transpose()?;
        Ok(Self {
            kube,
            argocd,
            field_manager,
        })
    }

    fn client(&self) -> Result<&Client, ActError> {
        self.kube.as_ref().ok_or_else(|| {
            ActError::Refused(
                "no Kubernetes API configured (remediator.kubeconfig, in-cluster or ~/.kube/config)"
                    .into(),
            )
        })
    }

    /// Values the action changes, as they are now (recorded before the change, for rollback),
    /// and the values its guards are checked against just before it runs
    /// ([`guards::check_execute`](crate::guards::check_execute)).
    #[tracing::instrument(name = "kubernetes.observe", skip_all, fields(otel.kind = "client", action = %a.kind))]
    pub async fn observe(&self, a: &ActionRecord) -> Result<Observed, ActError> {
        let mut out = Observed::new();
        match a.kind {
            ActionKind::PatchMemoryLimit
            | ActionKind::RollbackImage
            | ActionKind::ScaleInferenceService
            | ActionKind::RestartInferenceService => {
                let (ns, name) = Self::isvc_target(a)?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let (_, container) = container_of(&isvc);
                if let Some(m) = container
                    .and_then(|c| c["resources"]["limits"].get("memory"))
                    .and_then(Value::as_str)
                {
                    out.insert("observed_memory_limit".into(), json!(m));
                }
                if let Some(i) = container.and_then(|c| c["image"].as_str()) {
                    out.insert("observed_image".into(), json!(i));
                }
                if let Some(good) = self.previous_image(&ns, &name, &isvc).await? {
                    out.insert("observed_last_known_good_image".into(), json!(good));
                }
                let predictor = &isvc["spec"]["predictor"];
                out.insert(
                    "observed_replicas".into(),
                    json!(predictor["minReplicas"].as_u64().unwrap_or(1)),
                );
                if let Some(max) = predictor["maxReplicas"].as_u64() {
                    out.insert("observed_max_replicas".into(), json!(max));
                }
            }
            ActionKind::ApplyResourceQuota => {
                let ns = namespace_of(a)?;
                let client = self.client()?.clone();
                let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns)
                    .get_opt(QUOTA_NAME)
                    .await
                    .map_err(|e| kube_error("get resourcequota", e))?;
                out.insert(
                    "observed_quota_hard".into(),
                    quota
                        .and_then(|q| q.spec)
                        .and_then(|s| s.hard)
                        .map(|h| serde_json::to_value(h).unwrap_or(Value::Null))
                        .unwrap_or(Value::Null),
                );
                let lr = Api::<LimitRange>::namespaced(client.clone(), &ns)
                    .get_opt(LIMIT_RANGE_NAME)
                    .await
                    .map_err(|e| kube_error("get limitrange", e))?;
                let pods = Api::<Pod>::namespaced(client, &ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| kube_error("list pods", e))?;
                let isvcs = self
                    .isvc_api(&ns)?
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| kube_error("list inferenceservices", e))?;
                let max_replicas: BTreeMap<String, u64> = isvcs
                    .items
                    .iter()
                    .filter_map(|i| {
                        let max = i.data["spec"]["predictor"]["maxReplicas"].as_u64()?;
                        Some((i.metadata.name.clone()?, max))
                    })
                    .collect();
                out.insert(
                    "observed_pods".into(),
                    json!(settled_pods(&pods.items, &max_replicas)),
                );
                out.insert(
                    "observed_limit_range".into(),
                    lr.and_then(|l| l.spec)
                        .map(|s| serde_json::to_value(s.limits).unwrap_or(Value::Null))
                        .unwrap_or(Value::Null),
                );
            }
            ActionKind::ArgocdSync => {
                let app = self.argo_app(a).await?;
                out.insert(OBSERVED_NAMESPACES.into(), json!(app_namespaces(&app)));
            }
            ActionKind::RollbackStorageUri => self.observe_storage_uri(a, &mut out).await?,
            ActionKind::SetCanaryTraffic => self.observe_canary(a, &mut out).await?,
            ActionKind::RaiseMaxReplicas => self.observe_max_replicas(a, &mut out).await?,
            ActionKind::AdviseCapacity | ActionKind::SuggestPolicyFix | ActionKind::Escalate => {}
        }
        Ok(out)
    }

    /// Whether the target already is in the state the action produces.
    #[tracing::instrument(name = "kubernetes.check", skip_all, fields(otel.kind = "client", action = %a.kind))]
    /// (`_incident` is unused since the restart stamp identifies a restart; kept while the
    /// engine's callers are being reworked for #23.)
    pub async fn is_done(&self, a: &ActionRecord, _incident: &str) -> Result<bool, ActError> {
        Ok(match a.kind {
            ActionKind::PatchMemoryLimit => {
                let (ns, name) = Self::isvc_target(a)?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let want = param_str(a, "memory_limit").and_then(|q| parse_bytes(q).ok());
                let have = container_of(&isvc)
                    .1
                    .and_then(|c| c["resources"]["limits"]["memory"].as_str())
                    .and_then(|q| parse_bytes(q).ok());
                want.is_some() && want == have
            }
            ActionKind::RollbackImage => {
                let (ns, name) = Self::isvc_target(a)?;
                let isvc = self.get_isvc(&ns, &name).await?;
                container_of(&isvc).1.and_then(|c| c["image"].as_str()) == param_str(a, "image")
            }
            ActionKind::ScaleInferenceService => {
                let (ns, name) = Self::isvc_target(a)?;
                let isvc = self.get_isvc(&ns, &name).await?;
                isvc["spec"]["predictor"]["minReplicas"].as_u64() == param_u64(a, "replicas")
            }
            ActionKind::RestartInferenceService => {
                let (ns, name) = Self::isvc_target(a)?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let at = param_str(a, "restarted_at");
                at.is_some() && restarted_at(&isvc) == at
            }
            ActionKind::ApplyResourceQuota => {
                let ns = namespace_of(a)?;
                let client = self.client()?.clone();
                let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns)
                    .get_opt(QUOTA_NAME)
                    .await
                    .map_err(|e| kube_error("get resourcequota", e))?;
                let pods = quota
                    .and_then(|q| q.spec)
                    .and_then(|s| s.hard)
                    .and_then(|h| h.get("pods").map(|q| q.0.clone()));
                let lr = Api::<LimitRange>::namespaced(client, &ns)
                    .get_opt(LIMIT_RANGE_NAME)
                    .await
                    .map_err(|e| kube_error("get limitrange", e))?;
                pods.as_deref().and_then(|p| p.parse::<u64>().ok()) == param_u64(a, "pods")
                    && lr.is_some()
            }
            ActionKind::ArgocdSync => {
                let app = self.argo_app(a).await?;
                app["status"]["sync"]["status"] == "Synced"
            }
            ActionKind::RollbackStorageUri => self.storage_uri_is(a, "storage_uri").await?,
            ActionKind::SetCanaryTraffic => self.canary_traffic_is(a).await?,
            ActionKind::RaiseMaxReplicas => self.max_replicas_is(a).await?,
            ActionKind::AdviseCapacity | ActionKind::SuggestPolicyFix | ActionKind::Escalate => {
                true
            }
        })
    }

    /// The change itself: a server-side dry run (`dry_run`) or the real request. Returns what
    /// was done, in words.
    #[tracing::instrument(name = "kubernetes.execute", skip_all, fields(otel.kind = "client", action = %a.kind, dry_run))]
    pub async fn execute(
        &self,
        a: &ActionRecord,
        _incident: &str,
        dry_run: bool,
    ) -> Result<String, ActError> {
        let mode = if dry_run { "dry run" } else { "applied" };
        match a.kind {
            ActionKind::PatchMemoryLimit => {
                let (ns, name) = Self::isvc_target(a)?;
                let limit = param_str(a, "memory_limit")
                    .ok_or_else(|| ActError::Refused("no memory_limit".into()))?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let ops = memory_patch(&isvc, limit)?;
                self.json_patch(&ns, &name, ops, dry_run).await?;
                Ok(format!(
                    "{mode}: JSON patch of {ns}/{name} kserve-container limits.memory = {limit}"
                ))
            }
            ActionKind::RollbackImage => {
                let (ns, name) = Self::isvc_target(a)?;
                let image = param_str(a, "image")
                    .filter(|i| valid_image(i))
                    .ok_or_else(|| ActError::Refused("no valid image".into()))?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let known_good = self.previous_image(&ns, &name, &isvc).await?;
                if known_good.as_deref() != Some(image) {
                    return Err(ActError::Refused(format!(
                        "{image} is not the image of {ns}/{name}'s previous revision ({})",
                        known_good
                            .as_deref()
                            .unwrap_or("no earlier ReplicaSet revision with another image")
                    )));
                }
                let (index, container) = container_of(&isvc);
                let container =
                    container.ok_or_else(|| ActError::Refused("no predictor container".into()))?;
                let ops = json!([
                    {"op": "test", "path": format!("/spec/predictor/containers/{index}/name"), "value": container["name"]},
                    {"op": "replace", "path": format!("/spec/predictor/containers/{index}/image"), "value": image},
                ]);
                self.json_patch(&ns, &name, ops, dry_run).await?;
                Ok(format!("{mode}: image of {ns}/{name} = {image}"))
            }
            ActionKind::ScaleInferenceService => {
                let (ns, name) = Self::isvc_target(a)?;
                let replicas = param_u64(a, "replicas")
                    .ok_or_else(|| ActError::Refused("no replicas".into()))?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let patch = scale_patch(&isvc, replicas, None);
                self.merge_patch(&ns, &name, &patch, dry_run).await?;
                Ok(format!("{mode}: {ns}/{name} minReplicas = {replicas}"))
            }
            ActionKind::RestartInferenceService => {
                let (ns, name) = Self::isvc_target(a)?;
                let at = param_str(a, "restarted_at")
                    .ok_or_else(|| ActError::Refused("no restarted_at".into()))?;
                self.merge_patch(&ns, &name, &restart_patch(at), dry_run)
                    .await?;
                Ok(format!(
                    "{mode}: rollout restart of {ns}/{name} (predictor pod template {RESTARTED_AT} = {at})"
                ))
            }
            ActionKind::ApplyResourceQuota => {
                let ns = namespace_of(a)?;
                let pods =
                    param_u64(a, "pods").ok_or_else(|| ActError::Refused("no pods".into()))?;
                self.apply_quota(&ns, Some(json!({"pods": pods.to_string()})), dry_run)
                    .await?;
                self.apply_limit_range(&ns, Some(default_limits()), dry_run)
                    .await?;
                Ok(format!(
                    "{mode}: server-side apply of ResourceQuota {QUOTA_NAME} (pods = {pods}) and LimitRange {LIMIT_RANGE_NAME} in {ns}"
                ))
            }
            ActionKind::ArgocdSync => {
                let name = app_name(a)?;
                self.argo_sync(&name, dry_run).await?;
                Ok(format!("{mode}: ArgoCD sync of application {name}"))
            }
            ActionKind::RollbackStorageUri => self.rollback_storage_uri(a, dry_run).await,
            ActionKind::SetCanaryTraffic => self.set_canary_traffic(a, dry_run).await,
            ActionKind::RaiseMaxReplicas => self.raise_max_replicas(a, dry_run).await,
            ActionKind::AdviseCapacity | ActionKind::SuggestPolicyFix | ActionKind::Escalate => {
                Ok("nothing changes in the cluster".into())
            }
        }
    }

    /// Puts back what `a` changed, from the values recorded before the change (`observed_*`).
    #[tracing::instrument(name = "kubernetes.undo", skip_all, fields(otel.kind = "client", action = %a.kind))]
    pub async fn undo(&self, a: &ActionRecord) -> Result<String, ActError> {
        let observed = |k: &str| a.params.get(k).cloned().unwrap_or(Value::Null);
        match a.kind {
            ActionKind::PatchMemoryLimit => {
                let (ns, name) = Self::isvc_target(a)?;
                let previous = observed("observed_memory_limit");
                let previous = previous
                    .as_str()
                    .or_else(|| param_str(a, "previous_memory_limit"))
                    .ok_or_else(|| {
                        ActError::Refused("the previous memory limit is unknown".into())
                    })?
                    .to_owned();
                let isvc = self.get_isvc(&ns, &name).await?;
                let ops = memory_patch(&isvc, &previous)?;
                self.json_patch(&ns, &name, ops.clone(), true).await?;
                self.json_patch(&ns, &name, ops, false).await?;
                Ok(format!(
                    "memory limit of {ns}/{name} restored to {previous}"
                ))
            }
            ActionKind::RollbackImage => {
                let (ns, name) = Self::isvc_target(a)?;
                let previous = observed("observed_image");
                let previous = previous
                    .as_str()
                    .or_else(|| param_str(a, "failing_image"))
                    .ok_or_else(|| ActError::Refused("the previous image is unknown".into()))?
                    .to_owned();
                let isvc = self.get_isvc(&ns, &name).await?;
                let (index, _) = container_of(&isvc);
                let ops = json!([{"op": "replace", "path": format!("/spec/predictor/containers/{index}/image"), "value": previous}]);
                self.json_patch(&ns, &name, ops.clone(), true).await?;
                self.json_patch(&ns, &name, ops, false).await?;
                Ok(format!("image of {ns}/{name} restored to {previous}"))
            }
            ActionKind::ScaleInferenceService => {
                let (ns, name) = Self::isvc_target(a)?;
                let previous = observed("observed_replicas")
                    .as_u64()
                    .or_else(|| param_u64(a, "previous_replicas"))
                    .ok_or_else(|| {
                        ActError::Refused("the previous replica count is unknown".into())
                    })?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let patch =
                    scale_patch(&isvc, previous, observed("observed_max_replicas").as_u64());
                self.merge_patch(&ns, &name, &patch, true).await?;
                self.merge_patch(&ns, &name, &patch, false).await?;
                Ok(format!("{ns}/{name} scaled back to {previous} replicas"))
            }
            ActionKind::ApplyResourceQuota => {
                let ns = namespace_of(a)?;
                let hard = observed("observed_quota_hard");
                let limits = observed("observed_limit_range");
                let hard = (!hard.is_null()).then_some(hard);
                let limits = (!limits.is_null()).then_some(limits);
                for dry_run in [true, false] {
                    self.apply_quota(&ns, hard.clone(), dry_run).await?;
                    self.apply_limit_range(&ns, limits.clone(), dry_run).await?;
                }
                Ok(format!(
                    "{QUOTA_NAME} and {LIMIT_RANGE_NAME} in {ns} restored to their previous content ({})",
                    if hard.is_none() {
                        "none: released, nothing enforced"
                    } else {
                        "re-applied"
                    }
                ))
            }
            ActionKind::RollbackStorageUri => self.restore_storage_uri(a).await,
            ActionKind::SetCanaryTraffic => self.restore_canary_traffic(a).await,
            ActionKind::RaiseMaxReplicas => self.restore_max_replicas(a).await,
            kind => Err(ActError::Refused(format!("{kind} has no inverse"))),
        }
    }
}

fn namespace_of(a: &ActionRecord) -> Result<String, ActError> {
    match a
        .target
        .parse::<Target>()
        .map_err(|e| ActError::Refused(e.to_string()))?
    {
        Target::Namespace(ns) => Ok(ns),
        other => Err(ActError::Refused(format!(
            "{} needs a namespace target, not {other}",
            a.kind
        ))),
    }
}

#[cfg(test)]
mod tests;
