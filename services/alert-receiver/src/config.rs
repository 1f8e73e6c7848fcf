//! `[receiver]` configuration.

use std::time::Duration;

use serde::Deserialize;

use opsmesh_runtime::{ConfigError, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Name recorded as the alert's `source` when the sender does not name one.
    pub source_name: String,
    /// Request body limit in bytes (`413` above it).
    pub max_body_bytes: usize,
    /// JSON nesting limit (`400` above it).
    pub max_depth: usize,
    /// Result rows kept per alert; the rest are dropped and `rows_truncated` is set.
    pub max_rows: usize,
    /// How long a request may wait for the bus to acknowledge before answering `503`.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Seconds suggested to senders in `Retry-After` when the bus is unavailable.
    pub retry_after_secs: u64,
    /// Which alert fields name the entity; the first present field wins.
    pub entity_fields: EntityFields,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            source_name: "splunk".into(),
            max_body_bytes: 1024 * 1024,
            max_depth: 32,
            max_rows: 10_000,
            publish_timeout: Duration::from_secs(5),
            retry_after_secs: 5,
            entity_fields: EntityFields::default(),
        }
    }
}

impl Validate for ReceiverConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_depth", self.max_depth),
            ("max_rows", self.max_rows),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if self.publish_timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{prefix}.publish_timeout"),
                "must be > 0",
            ));
        }
        Ok(())
    }
}

/// Field names, in priority order, per entity attribute. Defaults cover the names used by the
/// opsmesh detections, KServe, Kubernetes and Alertmanager conventions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityFields {
    pub cluster: Vec<String>,
    pub namespace: Vec<String>,
    pub inference_service: Vec<String>,
    pub pod: Vec<String>,
    pub policy: Vec<String>,
    pub application: Vec<String>,
    pub severity: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Default for EntityFields {
    fn default() -> Self {
        Self {
            cluster: names(&["cluster", "kubernetes_cluster", "k8s_cluster"]),
            namespace: names(&["namespace", "kubernetes_namespace", "k8s_namespace", "ns"]),
            inference_service: names(&[
                "inferenceservice",
                "inference_service",
                "model_name",
                "isvc",
                "model",
            ]),
            pod: names(&["pod", "pod_name", "kubernetes_pod_name"]),
            policy: names(&["policy", "policy_name", "kyverno_policy"]),
            application: names(&["application", "argocd_app", "app_name"]),
            severity: names(&["severity", "urgency"]),
        }
    }
}
