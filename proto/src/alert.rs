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
/// Kubernetes names here are validated (RFC 1123) before they are set. An alert naming
/// something that is not a usable name (`namespace="prod; rm -rf"`) carries no names at all
/// (only the cluster) and lists what it sent in `unusable`: it becomes an escalated incident
/// with an unknown root cause, and nothing is built from those values.
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
    /// Entity fields whose values are not usable names; empty for a usable entity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unusable: Vec<UnusableField>,
}

/// One entity field the receiver could not use, kept for the humans the incident goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct UnusableField {
    /// The alert field it came from (one of the receiver's configured entity fields).
    pub field: String,
    /// The value as a quoted string literal, control and other non-printable characters
    /// escaped (`"prod; rm -rf\u{7}"`): safe to show in any log, message or page.
    pub quoted: String,
    /// True when the value was longer than the receiver keeps and `quoted` holds its start.
    #[serde(default)]
    pub truncated: bool,
    /// Why the value is not usable.
    pub reason: String,
}

impl Entity {
    /// Whether the alert named something unusable: then nothing may act on it.
    pub fn is_unusable(&self) -> bool {
        !self.unusable.is_empty()
    }

    /// Every unusable field as `field=<quoted value>`, comma-separated, for messages.
    pub fn unusable_summary(&self) -> String {
        self.unusable
            .iter()
            .map(|u| {
                let cut = if u.truncated { " (truncated)" } else { "" };
                format!("{}={}{cut}", u.field, u.quoted)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `inferenceservice/<ns>/<name>`-style reference, as used in action targets; never one
    /// for an unusable entity.
    pub fn target(&self) -> Option<String> {
        if self.is_unusable() {
            return None;
        }
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
