//! `opsmesh.alerts.v1`: one alert as the receiver normalised it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Payload, Severity, topics};

/// Where the alert came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertSourceKind {
    /// opsmesh's own Splunk custom alert action (signed, all rows).
    SplunkAlertAction,
    /// Splunk's built-in Webhook action (first row only).
    SplunkWebhook,
    /// Prometheus Alertmanager webhook (version 4).
    Alertmanager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// A result-row value: Splunk sends strings, and arrays of strings for multivalue fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldValue {
    One(String),
    Many(Vec<String>),
}

impl FieldValue {
    /// The first value, which is what entity extraction uses.
    pub fn first(&self) -> Option<&str> {
        match self {
            Self::One(v) => Some(v),
            Self::Many(vs) => vs.first().map(String::as_str),
        }
    }
}

pub type Row = BTreeMap<String, FieldValue>;

/// Kind of resource an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Inferenceservice,
    Pod,
    Namespace,
    Application,
}

/// What the alert is about, extracted from its fields by the receiver's field mapping.
/// Kubernetes names here are validated (RFC 1123) before they are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Entity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EntityKind>,
    /// Name of the inference service, pod or application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kyverno policy the alert is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// ArgoCD application, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

impl Entity {
    /// `inferenceservice/<ns>/<name>`-style reference, as used in action targets.
    pub fn target(&self) -> Option<String> {
        let kind = match self.kind? {
            EntityKind::Inferenceservice => "inferenceservice",
            EntityKind::Pod => "pod",
            EntityKind::Namespace => {
                return Some(crate::Target::Namespace(self.namespace.clone()?).to_string());
            }
            EntityKind::Application => "application",
        };
        let (namespace, name) = (self.namespace.as_ref()?, self.name.as_ref()?);
        Some(crate::Target::namespaced(kind, namespace, name).to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Alert {
    pub source_kind: AlertSourceKind,
    /// Configured name of the sending source (e.g. `splunk-prod`).
    pub source: String,
    /// Splunk saved-search name or Alertmanager `alertname`.
    pub name: String,
    pub status: AlertStatus,
    pub severity: Severity,
    /// Stable identity: source + name + entity, without volatile fields. Also the incident key.
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Link to the results in Splunk Web (validated http(s); never fetched by opsmesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_link: Option<String>,
    /// Every result row the sender delivered.
    pub rows: Vec<Row>,
    /// True when the sender (or the receiver's limit) dropped rows.
    #[serde(default)]
    pub rows_truncated: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub entity: Entity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub received_at: DateTime<Utc>,
}

impl Payload for Alert {
    const SCHEMA: &'static str = topics::ALERTS;
}
