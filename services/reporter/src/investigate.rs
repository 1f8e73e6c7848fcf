//! Queueing an investigation on `opsmesh.investigation-requests.v1` — the one path the
//! console, its API and the MCP tools share. The diagnoser's investigator takes requests up
//! from the topic; the request is applied to the store at once, so views show it queued
//! before the timeline consumer reads it back.

use std::sync::Arc;

use serde_json::json;

use opsmesh_proto::{Envelope, investigation::InvestigationRequest};
use opsmesh_runtime::Publisher;

use crate::timeline::IncidentStore;

#[derive(Debug, thiserror::Error)]
pub enum InvestigateError {
    #[error("incident_id: no incident {0:?} in this reporter's timeline")]
    UnknownIncident(String),
    /// What the request checks refused, naming the field (`question: must not be empty`).
    #[error("{0}")]
    Invalid(String),
    #[error("publishing the request failed: {0}")]
    Publish(String),
}

impl InvestigateError {
    /// The field the error is about, when it is one the caller gave.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownIncident(_) => Some("incident_id"),
            Self::Invalid(why) => why.split_once(':').map(|(field, _)| field),
            Self::Publish(_) => None,
        }
    }
}

/// What to investigate.
#[derive(Debug, Clone)]
pub enum Ask {
    /// An incident of the timeline: why it happened and what to do.
    Incident(String),
    /// A question, optionally about one namespace.
    Question {
        question: String,
        namespace: Option<String>,
    },
}

impl Ask {
    /// What a caller asked with the console API's or the MCP tool's three optional fields:
    /// an incident, or a question (maybe about a namespace), never both.
    pub fn from_fields(
        incident_id: Option<String>,
        question: Option<String>,
        namespace: Option<String>,
    ) -> Result<Self, &'static str> {
        match (incident_id, question, namespace) {
            (Some(id), None, None) => Ok(Self::Incident(id)),
            (None, question, namespace) => Ok(Self::Question {
                question: question.unwrap_or_default(),
                namespace,
            }),
            _ => Err(
                "incident_id: give either an incident_id or a question (with an optional namespace), not both",
            ),
        }
    }
}

/// Publishes investigation requests for the console and the MCP tools.
#[derive(Clone)]
pub struct Requester {
    store: Arc<IncidentStore>,
    publisher: Publisher,
    /// Stamped on requests about no incident.
    cluster: String,
}

impl Requester {
    pub fn new(store: Arc<IncidentStore>, publisher: Publisher, cluster: &str) -> Self {
        Self {
            store,
            publisher,
            cluster: cluster.to_owned(),
        }
    }

    /// Queues `ask` for `requested_by` (`console:<user>`, `mcp:<holder>`): a new
    /// `inv-<uuid v7>` id, the incident's facts as the timeline knows them, validated, then
    /// published (returns once the bus acknowledged it).
    pub async fn request(
        &self,
        ask: Ask,
        requested_by: &str,
    ) -> Result<Envelope<InvestigationRequest>, InvestigateError> {
        let investigation_id = format!("inv-{}", uuid::Uuid::now_v7().simple());
        let (cluster, request) = match ask {
            Ask::Incident(id) => {
                let detail = self
                    .store
                    .detail(&id)
                    .ok_or_else(|| InvestigateError::UnknownIncident(id.clone()))?;
                let s = &detail.summary;
                let facts = json!({
                    "summary": s.summary,
                    "root_cause": s.root_cause,
                    "confidence": detail.confidence,
                    "target": s.target,
                    "namespace": s.namespace,
                    "status": s.status,
                    "alerts": s.alert_names,
                    "evidence": detail.evidence.iter().map(|e| json!({
                        "id": e.id,
                        "query": e.query,
                        "rows": e.row_count,
                    })).collect::<Vec<_>>(),
                });
                let request = InvestigationRequest {
                    investigation_id,
                    incident_id: Some(id),
                    question: None,
                    namespace: s.namespace.clone(),
                    requested_by: requested_by.to_owned(),
                    facts: Some(facts),
                };
                (s.cluster.clone(), request)
            }
            Ask::Question {
                question,
                namespace,
            } => {
                let request = InvestigationRequest {
                    investigation_id,
                    incident_id: None,
                    question: Some(question.trim().to_owned()),
                    namespace: namespace
                        .map(|ns| ns.trim().to_owned())
                        .filter(|ns| !ns.is_empty()),
                    requested_by: requested_by.to_owned(),
                    facts: None,
                };
                (self.cluster.clone(), request)
            }
        };
        request.validate().map_err(InvestigateError::Invalid)?;
        let envelope = Envelope::new(
            "opsmesh-reporter",
            cluster,
            request.incident_id.clone(),
            request,
        );
        self.publisher
            .publish(&envelope.payload.investigation_id, &envelope)
            .await
            .map_err(|e| InvestigateError::Publish(e.to_string()))?;
        tracing::info!(
            investigation = %envelope.payload.investigation_id,
            incident = ?envelope.payload.incident_id,
            %requested_by,
            "investigation requested"
        );
        self.store.apply_investigation_request(&envelope);
        Ok(envelope)
    }
}
