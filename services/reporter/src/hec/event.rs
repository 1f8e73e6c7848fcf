//! opsmesh envelope → HEC event envelope.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use opsmesh_proto::{
    envelope::Envelope,
    topics::{ALERTS, APPROVALS, DIAGNOSES, REMEDIATIONS, TELEMETRY},
};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("not an opsmesh envelope: {0}")]
    NotAnEnvelope(#[from] serde_json::Error),
    #[error("unknown schema {0:?}")]
    UnknownSchema(String),
}

/// One HEC event envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HecEvent {
    /// Event time, epoch seconds with fraction.
    pub time: f64,
    pub host: String,
    pub source: String,
    pub sourcetype: String,
    pub index: String,
    /// Flat indexed fields: what `incident_id=<id>` searches match.
    pub fields: Map<String, Value>,
    pub event: Value,
}

impl HecEvent {
    pub fn from_envelope(bytes: &[u8], index: &str, host: &str) -> Result<Self, EncodeError> {
        let envelope: Envelope<Value> = serde_json::from_slice(bytes)?;
        let payload = &envelope.payload;
        let sourcetype = match envelope.schema.as_str() {
            ALERTS => "opsmesh:alert",
            DIAGNOSES => "opsmesh:diagnosis",
            REMEDIATIONS => "opsmesh:remediation",
            APPROVALS => "opsmesh:approval",
            TELEMETRY => match str_at(payload, &["record", "kind"]) {
                Some("models") => "opsmesh:models",
                Some("policies") => "opsmesh:policies",
                Some("costs") => "opsmesh:costs",
                Some("argocd") => "opsmesh:argocd",
                _ => "opsmesh:collector",
            },
            other => return Err(EncodeError::UnknownSchema(other.to_owned())),
        };
        let mut fields = Map::new();
        let mut put = |name: &str, value: Option<&str>| {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                fields.insert(name.to_owned(), Value::String(v.to_owned()));
            }
        };
        put("incident_id", envelope.incident_id.as_deref());
        put("cluster", Some(&envelope.cluster));
        put("event_id", Some(&envelope.id.to_string()));
        put(
            "namespace",
            str_at(payload, &["entity", "namespace"]).or(str_at(payload, &["record", "namespace"])),
        );
        put("root_cause", str_at(payload, &["root_cause"]));
        put("action", str_at(payload, &["action", "kind"]));
        put("outcome", str_at(payload, &["state"]));
        Ok(Self {
            time: envelope.occurred_at.timestamp_micros() as f64 / 1e6,
            host: host.to_owned(),
            source: envelope.source.clone(),
            sourcetype: sourcetype.to_owned(),
            index: index.to_owned(),
            fields,
            event: serde_json::to_value(&envelope)?,
        })
    }
}

fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}
