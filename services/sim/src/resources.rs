//! The API resources the simulator serves, and their discovery documents.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: the main endpoint ignores status, `/status` only writes it.
    pub status_subresource: bool,
    /// A custom resource: strategic merge patch is refused (415), as for real CRDs.
    pub custom: bool,
    pub short_names: &'static [&'static str],
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, `inferenceservices.serving.kserve.io`: how the API server names it in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
];

macro_rules! res {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $status:expr, $custom:expr, $short:expr) => {
        ResourceDef {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            status_subresource: $status,
            custom: $custom,
            short_names: $short,
        }
    };
}

pub const NAMESPACES: ResourceDef = res!(
    "",
    "v1",
    "namespaces",
    "namespace",
    "Namespace",
    false,
    true,
    false,
    &["ns"]
);
pub const PODS: ResourceDef = res!("", "v1", "pods", "pod", "Pod", true, true, false, &["po"]);
pub const EVENTS: ResourceDef = res!(
    "",
    "v1",
    "events",
    "event",
    "Event",
    true,
    false,
    false,
    &["ev"]
);
pub const RESOURCE_QUOTAS: ResourceDef = res!(
    "",
    "v1",
    "resourcequotas",
    "resourcequota",
    "ResourceQuota",
    true,
    true,
    false,
    &["quota"]
);
pub const LIMIT_RANGES: ResourceDef = res!(
    "",
    "v1",
    "limitranges",
    "limitrange",
    "LimitRange",
    true,
    false,
    false,
    &["limits"]
);
pub const SECRETS: ResourceDef = res!(
    "",
    "v1",
    "secrets",
    "secret",
    "Secret",
    true,
    false,
    false,
    &[]
);
pub const CONFIG_MAPS: ResourceDef = res!(
    "",
    "v1",
    "configmaps",
    "configmap",
    "ConfigMap",
    true,
    false,
    false,
    &["cm"]
);
pub const INFERENCE_SERVICES: ResourceDef = res!(
    "serving.kserve.io",
    "v1beta1",
    "inferenceservices",
    "inferenceservice",
    "InferenceService",
    true,
    true,
    true,
    &["isvc"]
);
pub const POLICY_REPORTS: ResourceDef = res!(
    "wgpolicyk8s.io",
    "v1alpha2",
    "policyreports",
    "policyreport",
    "PolicyReport",
    true,
    false,
    true,
    &["polr"]
);
pub const CLUSTER_POLICY_REPORTS: ResourceDef = res!(
    "wgpolicyk8s.io",
    "v1alpha2",
    "clusterpolicyreports",
    "clusterpolicyreport",
    "ClusterPolicyReport",
    false,
    false,
    true,
    &["cpolr"]
);
pub const CLUSTER_POLICIES: ResourceDef = res!(
    "kyverno.io",
    "v1",
    "clusterpolicies",
    "clusterpolicy",
    "ClusterPolicy",
    false,
    true,
    true,
    &["cpol"]
);
pub const APPLICATIONS: ResourceDef = res!(
    "argoproj.io",
    "v1alpha1",
    "applications",
    "application",
    "Application",
    true,
    false,
    true,
    &["app", "apps"]
);

/// KServe's raw-deployment mode runs each predictor as a Deployment (`<isvc>-predictor`).
pub const DEPLOYMENTS: ResourceDef = res!(
    "apps",
    "v1",
    "deployments",
    "deployment",
    "Deployment",
    true,
    true,
    false,
    &["deploy"]
);
/// One per revision of a Deployment's pod template: the revision history.
pub const REPLICA_SETS: ResourceDef = res!(
    "apps",
    "v1",
    "replicasets",
    "replicaset",
    "ReplicaSet",
    true,
    true,
    false,
    &["rs"]
);

/// metrics-server's samples of each pod's containers (`kubectl top pod`).
pub const POD_METRICS: ResourceDef = res!(
    "metrics.k8s.io",
    "v1beta1",
    "pods",
    "pod",
    "PodMetrics",
    true,
    false,
    false,
    &[]
);

pub const ALL: &[ResourceDef] = &[
    NAMESPACES,
    PODS,
    EVENTS,
    RESOURCE_QUOTAS,
    LIMIT_RANGES,
    DEPLOYMENTS,
    REPLICA_SETS,
    POD_METRICS,
    INFERENCE_SERVICES,
    POLICY_REPORTS,
    CLUSTER_POLICY_REPORTS,
    CLUSTER_POLICIES,
    APPLICATIONS,
    SECRETS,
    CONFIG_MAPS,
];

/// Namespace ArgoCD Applications live in.
pub const ARGOCD_NAMESPACE: &str = "argocd";

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    ALL.iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// Index of a resource in [`ALL`] (stable identity in the store).
pub fn index_of(def: &ResourceDef) -> usize {
    ALL.iter().position(|d| d == def).expect("known resource")
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for d in ALL.iter().filter(|d| !d.group.is_empty()) {
        if !out.contains(&(d.group, d.version)) {
            out.push((d.group, d.version));
        }
    }
    out
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .map(|(g, v)| group_doc(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`.
pub fn group(group: &str) -> Option<Value> {
    group_versions()
        .into_iter()
        .find(|(g, _)| *g == group)
        .map(|(g, v)| {
            let mut doc = group_doc(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = ALL
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in defs {
        resources.push(json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": VERBS,
            "shortNames": d.short_names,
        }));
        if d.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
