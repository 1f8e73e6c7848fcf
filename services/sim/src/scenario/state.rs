//! The initial cluster state a scenario seeds: namespaces, InferenceServices, ArgoCD
//! Applications and Kyverno policies.

use serde::Deserialize;

use super::Bytes;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    #[serde(default)]
    pub namespaces: Vec<NamespaceSpec>,
    #[serde(default)]
    pub inference_services: Vec<InferenceServiceSpec>,
    #[serde(default)]
    pub argocd_apps: Vec<ArgoAppSpec>,
    #[serde(default)]
    pub policies: Vec<PolicyDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: String,
    #[serde(default)]
    pub hourly_budget_usd: Option<f64>,
    /// A ResourceQuota `team-quota` with `hard.pods` this many (the team's own quota).
    #[serde(default)]
    pub pod_quota: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceServiceSpec {
    pub namespace: String,
    pub name: String,
    #[serde(default = "super::one")]
    pub replicas: u32,
    #[serde(default)]
    pub memory_limit: Option<Bytes>,
    #[serde(default)]
    pub memory_request: Option<Bytes>,
    #[serde(default)]
    pub gpu: u32,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub previous_image: Option<String>,
    #[serde(default)]
    pub hourly_cost_usd: Option<f64>,
    #[serde(default)]
    pub argocd_app: Option<String>,
    /// Where the model is loaded from (`STORAGE_URI` of `kserve-container`, which makes KServe
    /// inject its storage initializer).
    #[serde(default)]
    pub storage_uri: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoAppSpec {
    pub name: String,
    pub namespace: String,
    #[serde(default = "synced")]
    pub sync: SyncStatus,
    #[serde(default = "healthy")]
    pub health: HealthStatus,
}

fn synced() -> SyncStatus {
    SyncStatus::Synced
}

fn healthy() -> HealthStatus {
    HealthStatus::Healthy
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SyncStatus {
    Synced,
    OutOfSync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Progressing,
    Missing,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Degraded => "Degraded",
            Self::Progressing => "Progressing",
            Self::Missing => "Missing",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    pub name: String,
    #[serde(default = "enforce")]
    pub action: PolicyAction,
}

fn enforce() -> PolicyAction {
    PolicyAction::Enforce
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    Enforce,
    Audit,
}
