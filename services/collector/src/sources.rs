//! The four sources: models (KServe + pods + events), policies (Kyverno), costs (OpenCost),
//! gitops (ArgoCD). Each returns one record per resource; the collector bounds and isolates them.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ContainerStatus, Event, Pod, ResourceQuota},
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use serde_json::Value;

use opsmesh_proto::{
    Target,
    quantity::parse_bytes,
    revisions::previous_image,
    telemetry::{GitOpsStatus, ModelHealth, PolicyStatus, TelemetryRecord},
};

use opsmesh_runtime::secret::Secret;

/// Annotation on a namespace with its hourly budget in USD.
pub const BUDGET_ANNOTATION: &str = "opsmesh.dev/hourly-budget-usd";
const ISVC_LABEL: &str = "serving.kserve.io/inferenceservice";
/// KServe's model-server container in the predictor pod.
const MODEL_CONTAINER: &str = "kserve-container";
const MAX_EVENTS: usize = 10;

pub type Records = Vec<(String, TelemetryRecord)>;

mod costs;
pub use costs::{BaselineCache, Costs};

#[async_trait]
pub trait Source: Send + Sync {
    /// `models`, `policies`, `costs` or `gitops`.
    fn name(&self) -> &'static str;
    async fn collect(&self) -> Result<Records, String>;
}

fn kube_err(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{what}: {} {} ({})", s.code, s.reason, s.message),
        other => format!("{what}: {other}"),
    }
}

/// Lists `ar` in each namespace (or all), treating a missing API (CRD not installed) as empty.
async fn list_dynamic(
    client: &Client,
    ar: &ApiResource,
    namespaces: &[String],
    what: &str,
) -> Result<Vec<DynamicObject>, String> {
    let apis: Vec<Api<DynamicObject>> = if namespaces.is_empty() {
        vec![Api::all_with(client.clone(), ar)]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced_with(client.clone(), ns, ar))
            .collect()
    };
    let mut out = Vec::new();
    for api in apis {
        match api.list(&ListParams::default()).await {
            Ok(list) => out.extend(list.items),
            Err(kube::Error::Api(s))
                if s.code == 404 && s.details.as_ref().is_none_or(|d| d.name.is_empty()) =>
            {
                tracing::debug!(what, "API not served; nothing to read");
            }
            Err(e) => return Err(kube_err(what, e)),
        }
    }
    Ok(out)
}

async fn list_typed<K>(
    client: &Client,
    namespaces: &[String],
    lp: &ListParams,
    what: &str,
) -> Result<Vec<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let apis: Vec<Api<K>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut out = Vec::new();
    for api in apis {
        out.extend(api.list(lp).await.map_err(|e| kube_err(what, e))?.items);
    }
    Ok(out)
}

fn isvc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    )
}

fn pod_metrics_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    )
}

/// The model server's working set in a PodMetrics sample, in bytes.
fn model_server_memory(sample: &Value) -> Option<u64> {
    let containers = sample["containers"].as_array()?;
    let usage = &containers.iter().find(|c| c["name"] == MODEL_CONTAINER)?["usage"]["memory"];
    parse_bytes(usage.as_str()?).ok()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn chrono_of(t: &k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

fn event_time(e: &Event) -> Option<DateTime<Utc>> {
    e.last_timestamp
        .as_ref()
        .map(|t| chrono_of(&t.0))
        .or_else(|| e.event_time.as_ref().map(|t| chrono_of(&t.0)))
        .or_else(|| e.first_timestamp.as_ref().map(|t| chrono_of(&t.0)))
}

// ---- models ----

pub struct Models {
    pub client: Client,
    pub namespaces: Vec<String>,
    pub event_window: Duration,
}

#[async_trait]
impl Source for Models {
    fn name(&self) -> &'static str {
        "models"
    }

    async fn collect(&self) -> Result<Records, String> {
        let isvcs = list_dynamic(
            &self.client,
            &isvc_resource(),
            &self.namespaces,
            "inferenceservices",
        )
        .await?;
        let pods: Vec<Pod> = list_typed(
            &self.client,
            &self.namespaces,
            &ListParams::default().labels(ISVC_LABEL),
            "pods",
        )
        .await?;
        let events: Vec<Event> = list_typed(
            &self.client,
            &self.namespaces,
            &ListParams::default().fields("type=Warning"),
            "events",
        )
        .await?;
        // Pod quota headroom: whether the autoscaler's bound can be raised.
        let quotas: Vec<ResourceQuota> = list_typed(
            &self.client,
            &self.namespaces,
            &ListParams::default(),
            "resourcequotas",
        )
        .await?;
        // metrics-server's samples (`kubectl top`); a cluster without it has none.
        let usage = list_dynamic(
            &self.client,
            &pod_metrics_resource(),
            &self.namespaces,
            "pods.metrics.k8s.io",
        )
        .await?;
        // The predictor Deployments' revision history (KServe raw-deployment mode).
        let replica_sets: Vec<Value> = list_typed::<ReplicaSet>(
            &self.client,
            &self.namespaces,
            &ListParams::default().labels(ISVC_LABEL),
            "replicasets",
        )
        .await?
        .iter()
        .filter_map(|rs| serde_json::to_value(rs).ok())
        .collect();
        let since = Utc::now() - chrono::Duration::from_std(self.event_window).unwrap_or_default();
        let mut out = Vec::new();
        for isvc in isvcs {
            let ns = isvc.metadata.namespace.clone().unwrap_or_default();
            let name = isvc.metadata.name.clone().unwrap_or_default();
            let predictor = &isvc.data["spec"]["predictor"];
            let container = predictor["containers"]
                .as_array()
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c["name"] == MODEL_CONTAINER)
                        .or(cs.first())
                })
                .unwrap_or(&predictor["model"]);
            let image = container["image"].as_str().map(str::to_owned);
            let resources = &container["resources"];
            let ready = isvc.data["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            let mut health = ModelHealth {
                namespace: ns.clone(),
                name: name.clone(),
                ready,
                replicas: predictor["minReplicas"].as_u64().unwrap_or(1) as u32,
                memory_limit: text(&resources["limits"]["memory"]),
                memory_request: text(&resources["requests"]["memory"]),
                last_known_good_image: image.as_deref().and_then(|current| {
                    previous_image(
                        replica_sets
                            .iter()
                            .filter(|rs| rs["metadata"]["namespace"] == ns.as_str()),
                        &format!("{name}-predictor"),
                        MODEL_CONTAINER,
                        current,
                    )
                }),
                image,
                ..ModelHealth::default()
            };
            let mut last_termination: Option<(DateTime<Utc>, String)> = None;
            let mine: Vec<&Pod> = pods
                .iter()
                .filter(|p| {
                    p.metadata.namespace.as_deref() == Some(ns.as_str())
                        && p.metadata.labels.as_ref().and_then(|l| l.get(ISVC_LABEL)) == Some(&name)
                })
                .collect();
            crate::storage::observe(&mut health, &isvc.data, &mine, &replica_sets);
            crate::canary::observe(&mut health, &isvc.data);
            let ns_quotas: Vec<&ResourceQuota> = quotas
                .iter()
                .filter(|q| q.metadata.namespace.as_deref() == Some(ns.as_str()))
                .collect();
            crate::autoscale::observe(&mut health, &isvc.data, &ns_quotas);
            crate::scheduling::observe(&mut health, resources, &mine);
            let mut pod_names = Vec::new();
            for pod in mine {
                pod_names.push(pod.metadata.name.clone().unwrap_or_default());
                let working_set = pod.metadata.name.as_deref().and_then(|pod| {
                    usage
                        .iter()
                        .find(|m| {
                            m.metadata.namespace.as_deref() == Some(ns.as_str())
                                && m.metadata.name.as_deref() == Some(pod)
                        })
                        .and_then(|m| model_server_memory(&m.data))
                });
                health.peak_working_set_bytes = health.peak_working_set_bytes.max(working_set);
                let Some(status) = &pod.status else { continue };
                if status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                {
                    health.ready_replicas += 1;
                }
                let mut oom = false;
                for cs in status.container_statuses.iter().flatten() {
                    health.restarts += cs.restart_count.max(0) as u32;
                    if let Some((at, reason)) = recent_termination(cs, since) {
                        oom |= reason == "OOMKilled";
                        if last_termination
                            .as_ref()
                            .is_none_or(|(when, _)| at >= *when)
                        {
                            last_termination = Some((at, reason));
                        }
                    }
                    if health.waiting_reason.is_none()
                        && let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
                    {
                        health.waiting_reason = w.reason.clone();
                    }
                }
                if oom {
                    health.oom_killed += 1;
                }
                if health.missing_reference.is_none() {
                    health.missing_reference = crate::references::missing_in(pod, &events);
                }
            }
            health.last_termination_reason =
                last_termination.map(|(_, r)| r).filter(|r| !r.is_empty());
            let prefix = format!("{name}-predictor");
            let mut seen: BTreeMap<String, i32> = BTreeMap::new();
            for e in events.iter().filter(|e| {
                e.metadata.namespace.as_deref() == Some(ns.as_str())
                    && e.involved_object.name.as_ref().is_some_and(|n| {
                        *n == name || n.starts_with(&prefix) || pod_names.contains(n)
                    })
                    && event_time(e).is_none_or(|t| t >= since)
            }) {
                let line = format!(
                    "{}: {}",
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default()
                );
                *seen.entry(line).or_insert(0) += e.count.unwrap_or(1).max(1);
            }
            health.warning_events = seen
                .into_iter()
                .take(MAX_EVENTS)
                .map(|(line, n)| {
                    if n > 1 {
                        format!("{line} (x{n})")
                    } else {
                        line
                    }
                })
                .collect();
            out.push((
                Target::InferenceService {
                    namespace: ns,
                    name,
                }
                .to_string(),
                TelemetryRecord::Models(health),
            ));
        }
        Ok(out)
    }
}

/// The container's latest termination (its current state, else `lastState`) unless it
/// finished before `since`: `lastState` stays until the next termination, so an OOM kill of
/// last week on a container running fine since is not evidence of anything now. Without a
/// `finishedAt` its age is unknown and it counts.
fn recent_termination(
    cs: &ContainerStatus,
    since: DateTime<Utc>,
) -> Option<(DateTime<Utc>, String)> {
    [cs.state.as_ref(), cs.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref())
        .map(|t| {
            let at = t.finished_at.as_ref().map(|f| chrono_of(&f.0));
            (at, t.reason.clone().unwrap_or_default())
        })
        .filter(|(at, _)| at.is_none_or(|at| at >= since))
        .map(|(at, reason)| (at.unwrap_or(DateTime::<Utc>::MIN_UTC), reason))
        .max_by_key(|(at, _)| *at)
}

// ---- policies ----

pub struct Policies {
    pub client: Client,
    pub namespaces: Vec<String>,
    /// Whether ClusterPolicyReports and Kyverno ClusterPolicies are read (cluster-scoped:
    /// not with Roles bound per namespace).
    pub cluster_reads: bool,
}

#[async_trait]
impl Source for Policies {
    fn name(&self) -> &'static str {
        "policies"
    }

    async fn collect(&self) -> Result<Records, String> {
        let report = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
            "policyreports",
        );
        let cluster_report = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "ClusterPolicyReport"),
            "clusterpolicyreports",
        );
        let cpol = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kyverno.io", "v1", "ClusterPolicy"),
            "clusterpolicies",
        );
        let mut reports =
            list_dynamic(&self.client, &report, &self.namespaces, "policyreports").await?;
        let mut actions: BTreeMap<String, String> = BTreeMap::new();
        if self.cluster_reads {
            reports.extend(
                list_dynamic(&self.client, &cluster_report, &[], "clusterpolicyreports").await?,
            );
            actions = list_dynamic(&self.client, &cpol, &[], "clusterpolicies")
                .await?
                .into_iter()
                .filter_map(|p| {
                    let action = p.data["spec"]["validationFailureAction"]
                        .as_str()?
                        .to_ascii_lowercase();
                    Some((p.metadata.name.clone()?, action))
                })
                .collect();
        }
        let events: Vec<Event> = list_typed(
            &self.client,
            &self.namespaces,
            &ListParams::default().fields("reason=PolicyViolation"),
            "events",
        )
        .await?;
        let denials = |ns: &str, object: &str, policy: &str| -> u32 {
            events
                .iter()
                .filter(|e| {
                    e.metadata.namespace.as_deref() == Some(ns)
                        && e.involved_object.name.as_deref() == Some(object)
                        && e.message.as_deref().is_some_and(|m| {
                            m.contains(&format!("policy {policy}/")) && m.contains("blocked")
                        })
                })
                .map(|e| e.count.unwrap_or(1).max(1) as u32)
                .sum()
        };
        let mut out: Records = Vec::new();
        let mut covered: Vec<(String, String, String)> = Vec::new();
        for r in reports {
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let scope = &r.data["scope"];
            for res in r.data["results"].as_array().into_iter().flatten() {
                let result = res["result"].as_str().unwrap_or("").to_owned();
                if !matches!(result.as_str(), "fail" | "warn" | "error") {
                    continue;
                }
                let policy = res["policy"].as_str().unwrap_or("").to_owned();
                let subject = res["resources"].get(0).unwrap_or(scope);
                let object = subject["name"].as_str().unwrap_or("").to_owned();
                let resource =
                    format!("{}/{object}", subject["kind"].as_str().unwrap_or("Unknown"));
                let scope_name = scope["name"].as_str().unwrap_or(&object).to_owned();
                let action = actions.get(&policy).cloned().or_else(|| {
                    res["properties"]["validationFailureAction"]
                        .as_str()
                        .map(str::to_ascii_lowercase)
                });
                covered.push((ns.clone(), scope_name.clone(), policy.clone()));
                out.push((
                    format!("policyreport/{ns}/{policy}"),
                    TelemetryRecord::Policies(PolicyStatus {
                        namespace: ns.clone(),
                        denials: denials(&ns, &scope_name, &policy),
                        policy,
                        rule: res["rule"].as_str().map(str::to_owned),
                        resource,
                        result,
                        action,
                        message: res["message"].as_str().unwrap_or("").to_owned(),
                    }),
                ));
            }
        }
        // Denials seen only as admission events (no report yet).
        for e in &events {
            let (Some(msg), Some(ns), Some(object)) = (
                e.message.as_deref(),
                e.metadata.namespace.as_deref(),
                e.involved_object.name.as_deref(),
            ) else {
                continue;
            };
            let Some(rest) = msg.strip_prefix("policy ") else {
                continue;
            };
            let Some((policy_rule, detail)) = rest.split_once(' ') else {
                continue;
            };
            let (policy, rule) = policy_rule.split_once('/').unwrap_or((policy_rule, ""));
            if !detail.contains("blocked")
                || covered.contains(&(ns.to_owned(), object.to_owned(), policy.to_owned()))
            {
                continue;
            }
            covered.push((ns.to_owned(), object.to_owned(), policy.to_owned()));
            out.push((
                format!("policyreport/{ns}/{policy}"),
                TelemetryRecord::Policies(PolicyStatus {
                    namespace: ns.to_owned(),
                    policy: policy.to_owned(),
                    rule: (!rule.is_empty()).then(|| rule.to_owned()),
                    resource: format!(
                        "{}/{object}",
                        e.involved_object.kind.clone().unwrap_or_default()
                    ),
                    result: "fail".into(),
                    action: Some("enforce".into()),
                    message: detail
                        .split_once(": ")
                        .map_or(detail, |(_, m)| m)
                        .to_owned(),
                    denials: denials(ns, object, policy),
                }),
            ));
        }
        Ok(out)
    }
}

// ---- gitops ----

pub struct GitOps {
    pub http: reqwest::Client,
    pub url: String,
    /// Read at each pass: a rotated token file is used without a restart.
    pub token: Secret<String>,
    pub namespaces: Vec<String>,
}

#[async_trait]
impl Source for GitOps {
    fn name(&self) -> &'static str {
        "gitops"
    }

    async fn collect(&self) -> Result<Records, String> {
        let token = self.token.get();
        let url = format!("{}/api/v1/applications", self.url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .bearer_auth(token.as_str())
            .send()
            .await
            .map_err(|e| format!("argocd: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("argocd: {status}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "argocd: {status}: {}",
                body["message"]
                    .as_str()
                    .or(body["error"].as_str())
                    .unwrap_or("")
            ));
        }
        let mut out = Vec::new();
        for app in body["items"].as_array().into_iter().flatten() {
            let name = app["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let ns = app["spec"]["destination"]["namespace"]
                .as_str()
                .or(app["metadata"]["namespace"].as_str())
                .unwrap_or("")
                .to_owned();
            if !self.namespaces.is_empty() && !self.namespaces.contains(&ns) {
                continue;
            }
            let status = &app["status"];
            out.push((
                Target::Application {
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                }
                .to_string(),
                TelemetryRecord::Argocd(GitOpsStatus {
                    application: name,
                    namespace: ns,
                    sync: status["sync"]["status"]
                        .as_str()
                        .unwrap_or("Unknown")
                        .to_owned(),
                    health: status["health"]["status"]
                        .as_str()
                        .unwrap_or("Unknown")
                        .to_owned(),
                    revision: status["sync"]["revision"].as_str().map(str::to_owned),
                }),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
