//! The actions on Kubernetes (kube-rs) and ArgoCD (REST). Every write is a server-side dry
//! run first, then the same request for real, under the field manager `opsmesh`; every write
//! sets absolute values (or an annotation keyed by the incident), so repeating one changes
//! nothing; and every action can tell whether its target is already in the wanted state, which
//! is how an interrupted action is resolved without running it twice.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use opsmesh_proto::{ActionKind, Target, quantity::parse_bytes, remediation::ActionRecord};
use opsmesh_runtime::secret::Secret;

use crate::{plan::valid_image, policy::OBSERVED_NAMESPACES};

pub const QUOTA_NAME: &str = "opsmesh-cost-guard";
pub const LIMIT_RANGE_NAME: &str = "opsmesh-default-limits";
pub const RESTARTED_AT: &str = "opsmesh.dev/restartedAt";
pub const RESTART_INCIDENT: &str = "opsmesh.dev/restarted-by-incident";
pub const LAST_GOOD_IMAGE: &str = "opsmesh.dev/last-known-good-image";
const ISVC_LABEL: &str = "serving.kserve.io/inferenceservice";
const CONTAINER: &str = "kserve-container";

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

/// One health check's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub healthy: bool,
    pub detail: String,
}

struct ArgoCd {
    http: reqwest::Client,
    url: String,
    /// Read at each request: a rotated token file is used without a restart.
    token: Secret<String>,
}

/// The remediator's hands: a Kubernetes client and an ArgoCD client.
pub struct Cluster {
    kube: Option<Client>,
    argocd: Option<ArgoCd>,
    field_manager: String,
}

fn isvc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    )
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
        let argocd = match argocd {
            None => None,
            Some((url, token)) => Some(ArgoCd {
                http: reqwest::Client::builder()
                    .timeout(timeout)
                    .user_agent("opsmesh-remediator")
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?,
                url: url.trim_end_matches('/').to_owned(),
                token,
            }),
        };
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

    fn isvc_api(&self, ns: &str) -> Result<Api<DynamicObject>, ActError> {
        Ok(Api::namespaced_with(
            self.client()?.clone(),
            ns,
            &isvc_resource(),
        ))
    }

    fn params(&self, dry_run: bool) -> PatchParams {
        PatchParams {
            dry_run,
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        }
    }

    async fn get_isvc(&self, ns: &str, name: &str) -> Result<Value, ActError> {
        let obj = self
            .isvc_api(ns)?
            .get(name)
            .await
            .map_err(|e| kube_error(&format!("get inferenceservice {ns}/{name}"), e))?;
        serde_json::to_value(obj).map_err(|e| ActError::Refused(e.to_string()))
    }

    fn isvc_target(a: &ActionRecord) -> Result<(String, String), ActError> {
        match a
            .target
            .parse::<Target>()
            .map_err(|e| ActError::Refused(e.to_string()))?
        {
            Target::InferenceService { namespace, name } => Ok((namespace, name)),
            other => Err(ActError::Refused(format!(
                "{} needs an InferenceService target, not {other}",
                a.kind
            ))),
        }
    }

    /// Values the action changes, as they are now (recorded before the change, for rollback),
    /// and the values its guards are checked against just before it runs
    /// ([`guards::check_execute`](crate::guards::check_execute)).
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
                if let Some(good) = isvc["metadata"]["annotations"][LAST_GOOD_IMAGE].as_str() {
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
            ActionKind::SuggestPolicyFix | ActionKind::Escalate => {}
        }
        Ok(out)
    }

    /// Whether the target already is in the state the action produces.
    pub async fn is_done(&self, a: &ActionRecord, incident: &str) -> Result<bool, ActError> {
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
                isvc["metadata"]["annotations"][RESTART_INCIDENT].as_str() == Some(incident)
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
            ActionKind::SuggestPolicyFix | ActionKind::Escalate => true,
        })
    }

    /// The change itself: a server-side dry run (`dry_run`) or the real request. Returns what
    /// was done, in words.
    pub async fn execute(
        &self,
        a: &ActionRecord,
        incident: &str,
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
                let known_good = isvc["metadata"]["annotations"][LAST_GOOD_IMAGE].as_str();
                if known_good != Some(image) {
                    return Err(ActError::Refused(format!(
                        "{image} is not the InferenceService's last known good image ({LAST_GOOD_IMAGE} = {})",
                        known_good.unwrap_or("unset")
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
                let at = param_str(a, "restarted_at").unwrap_or("unknown");
                let patch = json!({"metadata": {"annotations": {RESTARTED_AT: at, RESTART_INCIDENT: incident}}});
                self.merge_patch(&ns, &name, &patch, dry_run).await?;
                Ok(format!(
                    "{mode}: rollout restart of {ns}/{name} ({RESTART_INCIDENT} = {incident})"
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
                let argo = self.argo()?;
                let url = format!("{}/api/v1/applications/{name}/sync", argo.url);
                let body = json!({"dryRun": dry_run, "prune": false});
                let response = argo
                    .http
                    .post(&url)
                    .bearer_auth(argo.token.get().as_str())
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| ActError::Transient(format!("argocd sync {name}: {e}")))?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    let msg = format!("argocd sync {name}: {status}: {text}");
                    return Err(if status.is_server_error() || status.as_u16() == 429 {
                        ActError::Transient(msg)
                    } else {
                        ActError::Refused(msg)
                    });
                }
                Ok(format!("{mode}: ArgoCD sync of application {name}"))
            }
            ActionKind::SuggestPolicyFix | ActionKind::Escalate => {
                Ok("nothing changes in the cluster".into())
            }
        }
    }

    /// Puts back what `a` changed, from the values recorded before the change (`observed_*`).
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
            kind => Err(ActError::Refused(format!("{kind} has no inverse"))),
        }
    }

    /// The health of what `a` acted on.
    pub async fn check(&self, a: &ActionRecord) -> Result<Health, ActError> {
        match a.kind {
            ActionKind::PatchMemoryLimit
            | ActionKind::RollbackImage
            | ActionKind::ScaleInferenceService
            | ActionKind::RestartInferenceService => {
                let (ns, name) = Self::isvc_target(a)?;
                let isvc = self.get_isvc(&ns, &name).await?;
                let ready = isvc["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .is_some_and(|c| c["status"] == "True");
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
                    detail: format!("{}: sync {sync}, health {health}", a.target),
                })
            }
            ActionKind::SuggestPolicyFix | ActionKind::Escalate => Ok(Health {
                healthy: true,
                detail: "nothing to check".into(),
            }),
        }
    }

    async fn json_patch(
        &self,
        ns: &str,
        name: &str,
        ops: Value,
        dry_run: bool,
    ) -> Result<(), ActError> {
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(|e| ActError::Refused(e.to_string()))?;
        self.isvc_api(ns)?
            .patch(name, &self.params(dry_run), &Patch::Json::<()>(patch))
            .await
            .map_err(|e| kube_error(&format!("patch inferenceservice {ns}/{name}"), e))?;
        Ok(())
    }

    async fn merge_patch(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<(), ActError> {
        self.isvc_api(ns)?
            .patch(name, &self.params(dry_run), &Patch::Merge(patch))
            .await
            .map_err(|e| kube_error(&format!("patch inferenceservice {ns}/{name}"), e))?;
        Ok(())
    }

    fn apply_params(&self, dry_run: bool) -> PatchParams {
        let mut p = PatchParams::apply(&self.field_manager).force();
        p.dry_run = dry_run;
        p
    }

    async fn apply_quota(
        &self,
        ns: &str,
        hard: Option<Value>,
        dry_run: bool,
    ) -> Result<(), ActError> {
        let body = json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "opsmesh"}},
            "spec": {"hard": hard.unwrap_or_else(|| json!({}))},
        });
        Api::<ResourceQuota>::namespaced(self.client()?.clone(), ns)
            .patch(
                QUOTA_NAME,
                &self.apply_params(dry_run),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| kube_error(&format!("apply resourcequota {ns}/{QUOTA_NAME}"), e))?;
        Ok(())
    }

    async fn apply_limit_range(
        &self,
        ns: &str,
        limits: Option<Value>,
        dry_run: bool,
    ) -> Result<(), ActError> {
        let body = json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": LIMIT_RANGE_NAME, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "opsmesh"}},
            "spec": {"limits": limits.unwrap_or_else(|| json!([]))},
        });
        Api::<LimitRange>::namespaced(self.client()?.clone(), ns)
            .patch(
                LIMIT_RANGE_NAME,
                &self.apply_params(dry_run),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| kube_error(&format!("apply limitrange {ns}/{LIMIT_RANGE_NAME}"), e))?;
        Ok(())
    }

    fn argo(&self) -> Result<&ArgoCd, ActError> {
        self.argocd.as_ref().ok_or_else(|| {
            ActError::Refused("no ArgoCD API configured (remediator.argocd.url and token)".into())
        })
    }

    async fn argo_app(&self, a: &ActionRecord) -> Result<Value, ActError> {
        let name = app_name(a)?;
        let argo = self.argo()?;
        let response = argo
            .http
            .get(format!("{}/api/v1/applications/{name}", argo.url))
            .bearer_auth(argo.token.get().as_str())
            .send()
            .await
            .map_err(|e| ActError::Transient(format!("argocd get {name}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let msg = format!("argocd get {name}: {status}");
            return Err(if status.is_server_error() {
                ActError::Transient(msg)
            } else {
                ActError::Refused(msg)
            });
        }
        response
            .json()
            .await
            .map_err(|e| ActError::Transient(format!("argocd get {name}: {e}")))
    }
}

/// The pods a namespace settles at under its current specs, as a pod quota counts them: pods
/// not finished (`Succeeded`, `Failed`) and not being deleted, with an InferenceService's
/// predictor pods counted up to its `maxReplicas` at most. Observed right after a scale-down,
/// the pods above the new maximum are still on their way out; counting them would refuse a
/// quota sized for the namespace after the scale-down.
fn settled_pods(pods: &[Pod], max_replicas: &BTreeMap<String, u64>) -> u64 {
    let mut per_isvc: BTreeMap<&str, u64> = BTreeMap::new();
    let mut other = 0;
    for pod in pods {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if finished || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pod.metadata.labels.as_ref().and_then(|l| l.get(ISVC_LABEL)) {
            Some(isvc) => *per_isvc.entry(isvc).or_default() += 1,
            None => other += 1,
        }
    }
    other
        + per_isvc
            .into_iter()
            .map(|(isvc, n)| max_replicas.get(isvc).map_or(n, |max| n.min(*max)))
            .sum::<u64>()
}

/// Every namespace an ArgoCD application deploys to: its destination, and the namespace of
/// each resource it manages (a manifest may name its own).
fn app_namespaces(app: &Value) -> Vec<String> {
    let destination = app["spec"]["destination"]["namespace"].as_str();
    let managed = app["status"]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["namespace"].as_str());
    let mut namespaces: Vec<String> = destination
        .into_iter()
        .chain(managed)
        .filter(|ns| !ns.is_empty())
        .map(str::to_owned)
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    namespaces
}

fn default_limits() -> Value {
    json!([{"type": "Container", "default": {"memory": "1Gi"}, "defaultRequest": {"memory": "512Mi"}}])
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

fn app_name(a: &ActionRecord) -> Result<String, ActError> {
    match a
        .target
        .parse::<Target>()
        .map_err(|e| ActError::Refused(e.to_string()))?
    {
        Target::Application { name, .. } => Ok(name),
        other => Err(ActError::Refused(format!(
            "{} needs an application target, not {other}",
            a.kind
        ))),
    }
}

/// The predictor's model-server container (`kserve-container`, else the first) and its index.
fn container_of(isvc: &Value) -> (usize, Option<&Value>) {
    let containers = isvc["spec"]["predictor"]["containers"].as_array();
    let Some(list) = containers else {
        return (0, None);
    };
    match list.iter().position(|c| c["name"] == CONTAINER) {
        Some(i) => (i, list.get(i)),
        None => (0, list.first()),
    }
}

/// A JSON patch setting the model-server container's memory limit (containers form), or the
/// model's (model form); the `test` op pins the container it meant.
fn memory_patch(isvc: &Value, limit: &str) -> Result<Value, ActError> {
    let (index, container) = container_of(isvc);
    if let Some(c) = container {
        let base = format!("/spec/predictor/containers/{index}");
        let mut ops =
            vec![json!({"op": "test", "path": format!("{base}/name"), "value": c["name"]})];
        if c.get("resources").is_none_or(Value::is_null) {
            ops.push(json!({"op": "add", "path": format!("{base}/resources"), "value": {"limits": {"memory": limit}}}));
        } else if c["resources"].get("limits").is_none_or(Value::is_null) {
            ops.push(json!({"op": "add", "path": format!("{base}/resources/limits"), "value": {"memory": limit}}));
        } else {
            ops.push(json!({"op": "add", "path": format!("{base}/resources/limits/memory"), "value": limit}));
        }
        return Ok(Value::Array(ops));
    }
    let model = &isvc["spec"]["predictor"]["model"];
    if model.is_null() {
        return Err(ActError::Refused(
            "the InferenceService has neither predictor containers nor a model".into(),
        ));
    }
    let base = "/spec/predictor/model";
    let op = if model.get("resources").is_none_or(Value::is_null) {
        json!({"op": "add", "path": format!("{base}/resources"), "value": {"limits": {"memory": limit}}})
    } else if model["resources"].get("limits").is_none_or(Value::is_null) {
        json!({"op": "add", "path": format!("{base}/resources/limits"), "value": {"memory": limit}})
    } else {
        json!({"op": "add", "path": format!("{base}/resources/limits/memory"), "value": limit})
    };
    Ok(json!([op]))
}

/// Absolute replica counts: minReplicas, and maxReplicas when it would exceed them (or its
/// recorded value on rollback).
fn scale_patch(isvc: &Value, replicas: u64, max: Option<u64>) -> Value {
    let mut predictor = json!({"minReplicas": replicas});
    match (max, isvc["spec"]["predictor"]["maxReplicas"].as_u64()) {
        (Some(m), _) => predictor["maxReplicas"] = json!(m),
        (None, Some(m)) if m > replicas => predictor["maxReplicas"] = json!(replicas),
        _ => {}
    }
    json!({"spec": {"predictor": predictor}})
}

#[cfg(test)]
mod tests;
