//! The investigator's Kubernetes reads (kube-rs): get and list of a few kinds (Argo CD
//! Applications among them: their sync and health status), events, the containers' current
//! and last state, and the tail of a container's log. Only the allowed namespaces; never
//! Secrets or anything outside the kind table.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, ListParams, LogParams},
    config::{KubeConfigOptions, Kubeconfig},
    discovery::ApiResource,
};
use serde::Deserialize;
use serde_json::{Value, json};

use opsmesh_runtime::{ConfigError, Validate};

use super::{InvestigatorConfig, tools::ToolError};

/// The client of `[diagnoser.investigator]`'s kubeconfig, or inferred (in-cluster, then the
/// default kubeconfig); `None` when nothing is configured and nothing can be inferred.
pub async fn client(config: &InvestigatorConfig) -> Result<Option<Client>, ConfigError> {
    let invalid = |e: String| ConfigError::invalid("diagnoser.investigator.kubeconfig", e);
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
            let options = KubeConfigOptions {
                context: config.kube_context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| invalid(e.to_string()))?
        }
        None => match kube::Config::infer().await {
            Ok(inferred) => inferred,
            Err(error) => {
                tracing::warn!(%error, "no Kubernetes configuration: the investigator has no Kubernetes tools");
                return Ok(None);
            }
        },
    };
    Client::try_from(kube_config)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// Kinds the investigator may read: (name the model uses, group, version, kind, plural).
const KINDS: &[(&str, &str, &str, &str, &str)] = &[
    ("pod", "", "v1", "Pod", "pods"),
    ("event", "", "v1", "Event", "events"),
    ("resourcequota", "", "v1", "ResourceQuota", "resourcequotas"),
    ("limitrange", "", "v1", "LimitRange", "limitranges"),
    (
        "inferenceservice",
        "serving.kserve.io",
        "v1beta1",
        "InferenceService",
        "inferenceservices",
    ),
    (
        "policyreport",
        "wgpolicyk8s.io",
        "v1alpha2",
        "PolicyReport",
        "policyreports",
    ),
    // Argo CD's sync and health status, as its Application resource carries it.
    (
        "application",
        "argoproj.io",
        "v1alpha1",
        "Application",
        "applications",
    ),
];

/// One Kubernetes permission: verbs on a resource of an API group (`""` is core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every Kubernetes call the investigator's tools make, all in the namespaces of
/// `diagnoser.investigator.namespaces`: get and list of each kind in [`KINDS`]
/// (`kubernetes_get`; `kubernetes_events` lists events, `container_states` gets or lists pods)
/// and get on `pods/log` (`kubernetes_logs`). Never Secrets, never a write.
/// deploy/k8s/diagnoser-rbac.expected.json lists the same (tests/rbac.rs), and deploy/check.sh
/// compares the role of deploy/k8s/components/diagnoser-investigator with that file.
pub const KUBERNETES_PERMISSIONS: &[Permission] = &[
    read("", "events"),
    read("", "limitranges"),
    read("", "pods"),
    Permission {
        api_group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
    read("", "resourcequotas"),
    read("argoproj.io", "applications"),
    read("serving.kserve.io", "inferenceservices"),
    read("wgpolicyk8s.io", "policyreports"),
];

const fn read(api_group: &'static str, resource: &'static str) -> Permission {
    Permission {
        api_group,
        resource,
        verbs: &["get", "list"],
    }
}

/// Names of the readable kinds, for the tool description and refusals.
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetArgs {
    pub kind: String,
    pub namespace: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub label_selector: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsArgs {
    pub namespace: String,
    /// Name of the object the events are about.
    #[serde(default)]
    pub object: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersArgs {
    pub namespace: String,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub label_selector: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    pub namespace: String,
    pub pod: String,
    /// Needed when the pod has more than one container.
    #[serde(default)]
    pub container: Option<String>,
    /// The last terminated run (before a crash or an OOM kill) instead of the current one.
    #[serde(default)]
    pub previous: bool,
    #[serde(default)]
    pub tail_lines: Option<u32>,
}

/// `[diagnoser.investigator.logs]`: how much of a container's log one call reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Lines read when the model does not say.
    pub default_tail_lines: u32,
    /// Most lines one call reads (a larger ask is cut to this).
    pub max_tail_lines: u32,
    /// Most bytes one call reads (`limitBytes`); the last line may be cut.
    pub max_bytes: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            default_tail_lines: 100,
            max_tail_lines: 500,
            max_bytes: 32 * 1024,
        }
    }
}

impl Validate for LogsConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.max_tail_lines == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_tail_lines"),
                "must be at least 1",
            ));
        }
        if !(1..=self.max_tail_lines).contains(&self.default_tail_lines) {
            return Err(ConfigError::invalid(
                format!("{prefix}.default_tail_lines"),
                format!(
                    "must be between 1 and max_tail_lines ({})",
                    self.max_tail_lines
                ),
            ));
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_bytes"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn kube_error(error: kube::Error) -> ToolError {
    ToolError::Kube(match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    })
}

/// An object without the bookkeeping that only costs tokens.
fn trimmed(mut object: Value) -> Value {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    object
}

fn list_params(label_selector: Option<&str>) -> ListParams {
    match label_selector {
        Some(selector) => ListParams::default().labels(selector),
        None => ListParams::default(),
    }
}

/// One object (`name`) or the list of a kind in a namespace.
pub async fn get(client: &Client, args: &GetArgs) -> Result<Value, ToolError> {
    let kind = args.kind.to_ascii_lowercase();
    let Some((_, group, version, kind_name, plural)) = KINDS.iter().find(|k| k.0 == kind) else {
        return Err(ToolError::Kind(args.kind.clone(), kind_names()));
    };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind_name),
        plural,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &args.namespace, &resource);
    match &args.name {
        Some(name) => {
            let object = api.get(name).await.map_err(kube_error)?;
            Ok(trimmed(serde_json::to_value(object).unwrap_or_default()))
        }
        None => {
            let list = api
                .list(&list_params(args.label_selector.as_deref()))
                .await
                .map_err(kube_error)?;
            let items: Vec<Value> = list
                .items
                .into_iter()
                .map(|o| trimmed(serde_json::to_value(o).unwrap_or_default()))
                .collect();
            Ok(json!({"kind": kind, "namespace": args.namespace, "items": items}))
        }
    }
}

/// Events of a namespace, or of one object in it, newest last.
pub async fn events(client: &Client, args: &EventsArgs) -> Result<Value, ToolError> {
    let api: Api<Event> = Api::namespaced(client.clone(), &args.namespace);
    let params = match &args.object {
        Some(name) => ListParams::default().fields(&format!("involvedObject.name={name}")),
        None => ListParams::default(),
    };
    let list = api.list(&params).await.map_err(kube_error)?;
    let events: Vec<Value> = list
        .items
        .into_iter()
        .map(|e| {
            json!({
                "object": format!(
                    "{}/{}",
                    e.involved_object.kind.unwrap_or_default().to_ascii_lowercase(),
                    e.involved_object.name.unwrap_or_default()
                ),
                "type": e.type_,
                "reason": e.reason,
                "message": e.message,
                "count": e.count,
                "last_timestamp": e.last_timestamp.map(|t| t.0.to_string()),
            })
        })
        .collect();
    Ok(json!({"namespace": args.namespace, "events": events}))
}

/// Each container's readiness, restarts, current state and last termination.
pub async fn containers(client: &Client, args: &ContainersArgs) -> Result<Value, ToolError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let pods = match &args.pod {
        Some(name) => vec![api.get(name).await.map_err(kube_error)?],
        None => {
            api.list(&list_params(args.label_selector.as_deref()))
                .await
                .map_err(kube_error)?
                .items
        }
    };
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|pod| {
            let statuses = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            json!({
                "pod": pod.metadata.name,
                "containers": statuses.into_iter().map(|c| json!({
                    "name": c.name,
                    "ready": c.ready,
                    "restart_count": c.restart_count,
                    "state": c.state,
                    "last_state": c.last_state,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({"namespace": args.namespace, "pods": pods}))
}

/// The last lines of a container's log (`previous`: its last terminated run), bounded by
/// `limits`; the API's refusal (no previous run, unknown container, …) is the error.
pub async fn logs(
    client: &Client,
    args: &LogsArgs,
    limits: &LogsConfig,
) -> Result<Value, ToolError> {
    let tail_lines = args
        .tail_lines
        .unwrap_or(limits.default_tail_lines)
        .clamp(1, limits.max_tail_lines);
    let api: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let params = LogParams {
        container: args.container.clone(),
        previous: args.previous,
        tail_lines: Some(i64::from(tail_lines)),
        limit_bytes: Some(i64::from(limits.max_bytes)),
        ..LogParams::default()
    };
    let text = api.logs(&args.pod, &params).await.map_err(kube_error)?;
    let bytes_limited = text.len() >= limits.max_bytes as usize;
    Ok(json!({
        "namespace": args.namespace,
        "pod": args.pod,
        "container": args.container,
        "previous": args.previous,
        "tail_lines": tail_lines,
        "lines": text.lines().collect::<Vec<_>>(),
        "bytes_limited": bytes_limited,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(adjust: impl FnOnce(&mut LogsConfig)) -> String {
        let mut config = LogsConfig::default();
        adjust(&mut config);
        match config.validate("diagnoser.investigator.logs") {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn the_permissions_are_what_the_kind_table_and_the_log_read_need() {
        let mut needed: Vec<(&str, &str, Vec<&str>)> = KINDS
            .iter()
            .map(|(_, group, _, _, plural)| (*group, *plural, vec!["get", "list"]))
            .collect();
        needed.push(("", "pods/log", vec!["get"]));
        needed.sort();
        let declared: Vec<(&str, &str, Vec<&str>)> = KUBERNETES_PERMISSIONS
            .iter()
            .map(|p| (p.api_group, p.resource, p.verbs.to_vec()))
            .collect();
        assert_eq!(declared, needed, "sorted by group, then resource");
        assert!(
            !declared
                .iter()
                .any(|(_, resource, _)| *resource == "secrets"),
            "never Secrets"
        );
    }

    #[test]
    fn log_bounds_are_checked_naming_the_key() {
        LogsConfig::default()
            .validate("diagnoser.investigator.logs")
            .unwrap();
        assert_eq!(
            refused(|c| c.max_tail_lines = 0),
            "diagnoser.investigator.logs.max_tail_lines"
        );
        assert_eq!(
            refused(|c| c.default_tail_lines = 501),
            "diagnoser.investigator.logs.default_tail_lines"
        );
        assert_eq!(
            refused(|c| c.max_bytes = 0),
            "diagnoser.investigator.logs.max_bytes"
        );
    }
}
