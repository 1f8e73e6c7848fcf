//! `opsmesh.incidents.v1` (compacted, keyed by fingerprint): the diagnoser's incident state,
//! so any replica can rebuild it after a restart or a rebalance.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Payload, topics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentRecord {
    pub fingerprint: String,
    /// `<fingerprint>` for the first incident of a fingerprint, `<fingerprint>-<n>` after the
    /// n-th reopening.
    pub incident_id: String,
    pub generation: u32,
    pub status: IncidentStatus,
    /// `inferenceservice/<ns>/<name>`-style target, for attaching related alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub last_alert_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Alerts coalesced into this incident (a storm counts every copy).
    pub alert_count: u64,
    /// The alert whose diagnosis represents the incident.
    pub first_alert_id: Uuid,
}

impl Payload for IncidentRecord {
    const SCHEMA: &'static str = topics::INCIDENTS;
}
