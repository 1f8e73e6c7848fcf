//! The in-memory store behind the timeline, the console and the MCP tools.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use prometheus::Registry;
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use opsmesh_proto::{
    Envelope,
    alert::Alert,
    approval::Approval,
    diagnosis::Diagnosis,
    investigation::{InvestigationEvent, InvestigationRequest, InvestigationState},
    remediation::Remediation,
    topics,
};

use super::{
    TimelineConfig,
    bounded::{InsertionOrdered, Table, TimelineMetrics},
    incident::Incident,
    investigation::{Investigation, InvestigationDetail, InvestigationSummary},
    open::OpenIncidents,
    view::{IncidentDetail, IncidentSummary, PendingApproval},
};

/// A change to one incident, or to an investigation of a question, for live views
/// (server-sent events).
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    /// The incident changed; `None` for an investigation of a question.
    pub incident_id: Option<String>,
    /// The investigation changed (`kind` `investigation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub investigation_id: Option<String>,
    /// `alert`, `diagnosis`, `remediation`, `approval` or `investigation`.
    pub kind: &'static str,
    /// The incident's status, or the question investigation's state.
    pub status: String,
}

/// Every incident's timeline, bounded by `max_incidents` (least recently updated forgotten
/// first), `max_events_per_incident` (see [`Incident`]), `max_dropped_ids_per_incident` and
/// `max_alert_ids`; what each cap drops is counted in `reporter_timeline_evictions_total`.
/// The open incidents are counted at each scrape (see [`OpenIncidents`]).
pub struct IncidentStore {
    config: TimelineConfig,
    inner: Arc<RwLock<Inner>>,
    updates: broadcast::Sender<Update>,
    metrics: TimelineMetrics,
}

pub(super) struct Inner {
    pub(super) incidents: HashMap<String, Incident>,
    /// Alert envelope id → the incident it belongs to (placed, or claimed by a diagnosis),
    /// the most recent `max_alert_ids`. An entry outliving its incident is harmless (the
    /// incident is gone either way) and ages out.
    alert_owner: InsertionOrdered<Uuid, String>,
    /// Investigations of questions (no incident), the most recently requested
    /// `max_questions`.
    questions: InsertionOrdered<String, Investigation>,
    /// Ids of questions forgotten, as many as are kept: a late or redelivered message of one
    /// (the consumer reading back a request the console applied at once) changes nothing.
    forgotten_questions: InsertionOrdered<String, ()>,
    tick: u64,
    evicted: u64,
}

impl IncidentStore {
    /// The store, its metrics registered in `registry`.
    pub fn new(config: &TimelineConfig, registry: &Registry) -> Self {
        let inner = Arc::new(RwLock::new(Inner {
            incidents: HashMap::new(),
            alert_owner: InsertionOrdered::new(config.max_alert_ids),
            questions: InsertionOrdered::new(config.max_questions),
            forgotten_questions: InsertionOrdered::new(config.max_questions),
            tick: 0,
            evicted: 0,
        }));
        opsmesh_runtime::metrics::register(registry, OpenIncidents::new(inner.clone()));
        Self {
            config: config.clone(),
            inner,
            updates: broadcast::channel(1024).0,
            metrics: TimelineMetrics::new(registry),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    /// Applies one message of any topic; messages of other topics and undecodable ones are
    /// ignored (the HEC writer dead-letters poison; this read model only reads). Returns
    /// whether the message changed the model.
    pub fn apply_message(&self, topic: &str, payload: &[u8]) -> bool {
        let result = match topic {
            topics::ALERTS => Envelope::<Alert>::from_slice(payload).map(|e| self.apply_alert(e)),
            topics::DIAGNOSES => {
                Envelope::<Diagnosis>::from_slice(payload).map(|e| self.apply_diagnosis(e))
            }
            topics::REMEDIATIONS => {
                Envelope::<Remediation>::from_slice(payload).map(|e| self.apply_remediation(e))
            }
            topics::APPROVALS => {
                Envelope::<Approval>::from_slice(payload).map(|e| self.apply_approval(e))
            }
            topics::INVESTIGATIONS => Envelope::<InvestigationEvent>::from_slice(payload)
                .map(|e| self.apply_investigation(e)),
            topics::INVESTIGATION_REQUESTS => Envelope::<InvestigationRequest>::from_slice(payload)
                .map(|e| self.apply_investigation_request(&e)),
            _ => return false,
        };
        match result {
            Ok(changed) => changed,
            Err(err) => {
                tracing::debug!(%topic, error = %err, "timeline ignores an undecodable message");
                false
            }
        }
    }

    pub fn apply_alert(&self, envelope: Envelope<Alert>) -> bool {
        let mut inner = self.write();
        let id = inner
            .alert_owner
            .get(&envelope.id)
            .cloned()
            .or_else(|| envelope.incident_id.clone())
            .unwrap_or_else(|| envelope.payload.fingerprint.clone());
        let alert_id = envelope.id;
        let changed = self.with_incident(&mut inner, &id, envelope.cluster.clone(), |incident| {
            incident.add_alert(envelope, &self.metrics)
        });
        if changed {
            self.own(&mut inner, alert_id, &id);
            self.notify(&inner, &id, "alert");
        }
        changed
    }

    pub fn apply_diagnosis(&self, envelope: Envelope<Diagnosis>) -> bool {
        let Some(id) = envelope.incident_id.clone() else {
            return false;
        };
        let mut inner = self.write();
        // Alerts the diagnosis coalesced belong to its incident, wherever they landed first
        // (a reopened incident's alerts carry the fingerprint, not `<fingerprint>-<n>`).
        let mut moved = Vec::new();
        for alert_id in &envelope.payload.alert_ids {
            if let Some(owner) = inner.alert_owner.get(alert_id).cloned()
                && owner != id
                && let Some(previous) = inner.incidents.get_mut(&owner)
            {
                let before = previous.sizes();
                if let Some(alert) = previous.take_alert(*alert_id) {
                    moved.push(alert);
                }
                self.metrics.resize(before, previous.sizes());
                if previous.is_empty() {
                    inner.incidents.remove(&owner);
                }
            }
            self.own(&mut inner, *alert_id, &id);
        }
        let changed = self.with_incident(&mut inner, &id, envelope.cluster.clone(), |incident| {
            let mut changed = false;
            for alert in moved {
                changed |= incident.add_alert(alert, &self.metrics);
            }
            incident.add_diagnosis(envelope, &self.metrics) || changed
        });
        if changed {
            self.notify(&inner, &id, "diagnosis");
        }
        changed
    }

    pub fn apply_remediation(&self, envelope: Envelope<Remediation>) -> bool {
        let Some(id) = envelope.incident_id.clone() else {
            return false;
        };
        let mut inner = self.write();
        let changed = self.with_incident(&mut inner, &id, envelope.cluster.clone(), |incident| {
            incident.add_remediation(envelope, &self.metrics)
        });
        if changed {
            self.notify(&inner, &id, "remediation");
        }
        changed
    }

    pub fn apply_approval(&self, envelope: Envelope<Approval>) -> bool {
        let Some(id) = envelope.incident_id.clone() else {
            return false;
        };
        let mut inner = self.write();
        let changed = self.with_incident(&mut inner, &id, envelope.cluster.clone(), |incident| {
            incident.add_approval(envelope, &self.metrics)
        });
        if changed {
            self.notify(&inner, &id, "approval");
        }
        changed
    }

    /// Tracks an investigation's status, step or report: on its incident, or among the
    /// questions when it has none.
    pub fn apply_investigation(&self, envelope: Envelope<InvestigationEvent>) -> bool {
        match envelope.incident_id.clone() {
            Some(id) => {
                let mut inner = self.write();
                let changed =
                    self.with_incident(&mut inner, &id, envelope.cluster.clone(), |incident| {
                        incident.add_investigation(&envelope, &self.metrics)
                    });
                if changed {
                    self.notify(&inner, &id, "investigation");
                }
                changed
            }
            None => self.with_question(
                &envelope.payload.investigation_id,
                envelope.occurred_at,
                |investigation| investigation.apply_event(&envelope),
            ),
        }
    }

    /// Tracks a request (queued): on its incident, or among the questions.
    pub fn apply_investigation_request(&self, envelope: &Envelope<InvestigationRequest>) -> bool {
        match envelope
            .payload
            .incident_id
            .clone()
            .or_else(|| envelope.incident_id.clone())
        {
            Some(id) => {
                let mut inner = self.write();
                let changed =
                    self.with_incident(&mut inner, &id, envelope.cluster.clone(), |incident| {
                        incident.add_investigation_request(envelope, &self.metrics)
                    });
                if changed {
                    self.notify(&inner, &id, "investigation");
                }
                changed
            }
            None => self.with_question(
                &envelope.payload.investigation_id,
                envelope.occurred_at,
                |investigation| investigation.apply_request(envelope),
            ),
        }
    }

    /// Applies `apply` to the question investigation `id` (added when new, forgetting the
    /// one first seen longest ago beyond `max_questions`).
    fn with_question(
        &self,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
        apply: impl FnOnce(&mut Investigation) -> bool,
    ) -> bool {
        let mut inner = self.write();
        let key = id.to_owned();
        if inner.forgotten_questions.contains(&key) {
            return false;
        }
        let (changed, state) = match inner.questions.get_mut(&key) {
            Some(investigation) => (apply(investigation), investigation.summary().state),
            None => {
                let mut investigation =
                    Investigation::new(id, None, at, self.config.max_steps_per_investigation);
                let changed = apply(&mut investigation);
                let state = investigation.summary().state;
                let forgotten = inner
                    .questions
                    .insert_forgetting(key.clone(), investigation);
                self.metrics.evicted(Table::Questions, forgotten.len());
                for id in forgotten {
                    inner.forgotten_questions.insert(id, ());
                }
                self.metrics.set(Table::Questions, inner.questions.len());
                (changed, state)
            }
        };
        if changed {
            // No receivers is fine: nobody is watching.
            let _ = self.updates.send(Update {
                incident_id: None,
                investigation_id: Some(key),
                kind: "investigation",
                status: state.to_string(),
            });
        }
        changed
    }

    /// Every investigation (of incidents and of questions) in `state` (any when `None`),
    /// most recently updated first.
    pub fn investigations(&self, state: Option<InvestigationState>) -> Vec<InvestigationSummary> {
        let inner = self.read();
        let mut list: Vec<InvestigationSummary> = inner
            .incidents
            .values()
            .flat_map(|incident| incident.investigations.iter())
            .chain(inner.questions.values())
            .map(Investigation::summary)
            .filter(|i| state.is_none_or(|state| i.state == state))
            .collect();
        list.sort_by_key(|i| std::cmp::Reverse(i.updated_at));
        list
    }

    /// One investigation, with its steps and report.
    pub fn investigation(&self, id: &str) -> Option<InvestigationDetail> {
        let inner = self.read();
        inner
            .incidents
            .values()
            .flat_map(|incident| incident.investigations.iter())
            .chain(inner.questions.values())
            .find(|i| i.id() == id)
            .map(Investigation::detail)
    }

    /// Every incident, most recently updated first.
    pub fn list(&self) -> Vec<IncidentSummary> {
        let inner = self.read();
        let mut list: Vec<(u64, IncidentSummary)> = inner
            .incidents
            .values()
            .map(|i| (i.tick, i.summary()))
            .collect();
        list.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        list.into_iter().map(|(_, s)| s).collect()
    }

    pub fn detail(&self, id: &str) -> Option<IncidentDetail> {
        self.read().incidents.get(id).map(Incident::detail)
    }

    pub fn summary(&self, id: &str) -> Option<IncidentSummary> {
        self.read().incidents.get(id).map(Incident::summary)
    }

    /// Actions awaiting a human decision that none was recorded for yet, oldest first.
    pub fn pending_approvals(&self) -> Vec<PendingApproval> {
        let inner = self.read();
        let mut pending: Vec<PendingApproval> = inner
            .incidents
            .values()
            .filter_map(Incident::pending_approval)
            .filter(|p| p.decided.is_none())
            .collect();
        pending.sort_by_key(|p| p.requested_at);
        pending
    }

    /// The pending approval of one incident (decided or not), if its latest record asks one.
    pub fn pending_approval(&self, id: &str) -> Option<PendingApproval> {
        self.read()
            .incidents
            .get(id)
            .and_then(Incident::pending_approval)
    }

    /// The diagnosis with this envelope id and its incident's summary (notifications).
    pub fn diagnosis(&self, diagnosis_id: Uuid) -> Option<(Envelope<Diagnosis>, IncidentSummary)> {
        let inner = self.read();
        inner.incidents.values().find_map(|incident| {
            incident
                .diagnoses
                .iter()
                .find(|d| d.id == diagnosis_id)
                .map(|d| (d.clone(), incident.summary()))
        })
    }

    pub fn len(&self) -> usize {
        self.read().incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Incidents forgotten to stay within `max_incidents`.
    pub fn evicted(&self) -> u64 {
        self.read().evicted
    }

    fn with_incident(
        &self,
        inner: &mut Inner,
        id: &str,
        cluster: String,
        apply: impl FnOnce(&mut Incident) -> bool,
    ) -> bool {
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.incidents.contains_key(id) {
            while inner.incidents.len() >= self.config.max_incidents {
                let Some(oldest) = inner
                    .incidents
                    .values()
                    .min_by_key(|i| i.tick)
                    .map(|i| i.id.clone())
                else {
                    break;
                };
                if let Some(gone) = inner.incidents.remove(&oldest) {
                    self.metrics.resize(gone.sizes(), Default::default());
                }
                inner.evicted += 1;
                self.metrics.evicted(Table::Incidents, 1);
            }
            inner
                .incidents
                .insert(id.to_owned(), Incident::new(id, &cluster, &self.config));
        }
        let incident = inner.incidents.get_mut(id).expect("inserted above");
        let before = incident.sizes();
        let changed = apply(incident);
        self.metrics.resize(before, incident.sizes());
        if changed {
            incident.tick = tick;
        } else if incident.is_empty() {
            inner.incidents.remove(id);
        }
        self.metrics.set(Table::Incidents, inner.incidents.len());
        changed
    }

    /// Remembers that `alert_id` belongs to incident `id`.
    fn own(&self, inner: &mut Inner, alert_id: Uuid, id: &str) {
        let forgotten = inner.alert_owner.insert(alert_id, id.to_owned());
        self.metrics.evicted(Table::AlertOwners, forgotten);
        self.metrics
            .set(Table::AlertOwners, inner.alert_owner.len());
    }

    fn notify(&self, inner: &Inner, id: &str, kind: &'static str) {
        if let Some(incident) = inner.incidents.get(id) {
            // No receivers is fine: nobody is watching.
            let _ = self.updates.send(Update {
                incident_id: Some(id.to_owned()),
                investigation_id: None,
                kind,
                status: incident.status(),
            });
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}
