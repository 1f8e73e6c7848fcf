//! `opsmesh.telemetry.v1`: normalised cluster state, one record per resource per interval.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Payload, topics};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Telemetry {
    /// Resource reference, also the Kafka key: `inferenceservice/<ns>/<name>`,
    /// `policyreport/<ns>/<policy>`, `cost/<ns>`, `application/<ns>/<name>`.
    pub resource: String,
    pub observed_at: DateTime<Utc>,
    pub record: TelemetryRecord,
}

impl Payload for Telemetry {
    const SCHEMA: &'static str = topics::TELEMETRY;
}

/// The record; `kind` matches the HEC sourcetype suffix (`opsmesh:models`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Built once per resource per interval and serialized at once: a box would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum TelemetryRecord {
    Models(ModelHealth),
    Policies(PolicyStatus),
    Costs(CostAllocation),
    Argocd(GitOpsStatus),
    /// A collector source failed this interval; the others still reported.
    SourceError(SourceError),
}

impl TelemetryRecord {
    /// The HEC sourcetype this record is written under.
    pub fn sourcetype(&self) -> &'static str {
        match self {
            Self::Models(_) => "opsmesh:models",
            Self::Policies(_) => "opsmesh:policies",
            Self::Costs(_) => "opsmesh:costs",
            Self::Argocd(_) => "opsmesh:argocd",
            Self::SourceError(_) => "opsmesh:collector",
        }
    }
}

/// Health of one KServe InferenceService and its predictor pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ModelHealth {
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    pub replicas: u32,
    pub ready_replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image a rollback goes back to: that of the newest older revision of the predictor
    /// Deployment (its ReplicaSets, `deployment.kubernetes.io/revision`) running another image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good_image: Option<String>,
    /// Sum of container restarts over the predictor pods.
    pub restarts: u32,
    /// Pods whose last termination was `OOMKilled`.
    pub oom_killed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination_reason: Option<String>,
    /// e.g. `CrashLoopBackOff`, `ImagePullBackOff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// Peak working set observed over the pods, in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_working_set_bytes: Option<u64>,
    #[serde(default)]
    pub warning_events: Vec<String>,
    /// A Secret or ConfigMap the predictor pods reference that the kubelet cannot find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_reference: Option<MissingReference>,
    /// Where the model is loaded from: `spec.predictor.model.storageUri`, or the
    /// `STORAGE_URI` env of a custom `kserve-container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_uri: Option<String>,
    /// The storage URI of the newest older revision of the predictor Deployment (its
    /// ReplicaSets) that loaded from another URI: what a rollback goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_storage_uri: Option<String>,
    /// Why the model does not load: KServe's `modelStatus.lastFailureInfo` (`ModelLoadFailed`)
    /// or the storage initializer's termination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_failure: Option<String>,
    /// `spec.predictor.canaryTrafficPercent`, when a canary rollout is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_traffic_percent: Option<u32>,
    /// How KServe splits the predictor's traffic (`status.components.predictor.traffic`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<RevisionTraffic>,
    /// `spec.predictor.maxReplicas`: the autoscaler's upper bound, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// How many more pods the namespace's ResourceQuotas admit (`hard.pods - used.pods`,
    /// the tightest quota); absent without a pod quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_quota_headroom: Option<u32>,
    /// GPUs one predictor pod requests (`nvidia.com/gpu`), when it requests any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_replica: Option<u32>,
    /// Why the scheduler cannot place a predictor pod (`PodScheduled=False`, reason
    /// `Unschedulable`: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<String>,
}

/// One revision's share of an InferenceService's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RevisionTraffic {
    pub revision: String,
    pub percent: u32,
    /// The latest revision (the canary while the split lasts).
    pub latest: bool,
}

/// What kind of object a pod references for its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReferenceKind {
    Secret,
    ConfigMap,
}

/// A referenced object the kubelet reported missing (`secret "hf-token" not found`), with the
/// pod spec's references to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MissingReference {
    pub kind: ReferenceKind,
    /// In the pods' namespace.
    pub name: String,
    /// Keys the pod spec reads from it (`secretKeyRef.key`, volume `items[].key`); empty when
    /// it takes the whole object (`envFrom`, a volume without items).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Where the pod spec references it: `env HF_TOKEN`, `envFrom`, `volume creds`.
    #[serde(default)]
    pub used_by: Vec<String>,
    /// The kubelet's words (container waiting message or `FailedMount` event).
    pub message: String,
}

/// A Kyverno policy result or denial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PolicyStatus {
    pub namespace: String,
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `kind/name` of the resource the result is about.
    pub resource: String,
    /// `pass`, `fail`, `warn`, `error` or `skip`.
    pub result: String,
    /// `enforce` (DENY) or `audit` (WARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub message: String,
    /// Admission denials seen for this resource and policy.
    pub denials: u32,
}

/// OpenCost allocation of a namespace (or one pod when `pod` is set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CostAllocation {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// OpenCost window, e.g. `1h`.
    pub window: String,
    pub hourly_cost_usd: f64,
    #[serde(default)]
    pub cpu_cost_usd: f64,
    #[serde(default)]
    pub gpu_cost_usd: f64,
    #[serde(default)]
    pub ram_cost_usd: f64,
    /// Namespace budget from its annotation or configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly_budget_usd: Option<f64>,
    /// On the namespace record: the replicas each workload usually runs, from OpenCost's
    /// allocation history (median over the history's steps of its pod-minutes per step), by
    /// OpenCost controller name (`<inferenceservice>-predictor`). The size a cost remediation
    /// scales back to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baseline_replicas: BTreeMap<String, u32>,
}

/// ArgoCD Application sync and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GitOpsStatus {
    pub application: String,
    pub namespace: String,
    /// `Synced`, `OutOfSync` or `Unknown`.
    pub sync: String,
    /// `Healthy`, `Degraded`, `Progressing`, `Missing`, …
    pub health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SourceError {
    /// `models`, `policies`, `costs` or `gitops`.
    pub source: String,
    pub error: String,
}
