//! One incident's messages, bounded: at most `max_events_per_incident` messages in memory
//! (storm alerts but the first go first, then the oldest of the longest other list, keeping
//! each list's latest), remediation records leaving memory folded into the audit-chain check,
//! and the ids of dropped messages remembered up to `max_dropped_ids_per_incident` so that
//! their redelivery changes nothing.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use opsmesh_proto::{
    Envelope,
    alert::Alert,
    approval::Approval,
    diagnosis::Diagnosis,
    investigation::{InvestigationEvent, InvestigationRequest},
    remediation::Remediation,
};

use super::{
    TimelineConfig,
    bounded::{InsertionOrdered, PerIncident, Table, TimelineMetrics},
    chain::FoldedChain,
    investigation::Investigation,
};

pub(super) struct Incident {
    pub id: String,
    pub cluster: String,
    /// By time received; the first is always kept.
    pub alerts: Vec<Envelope<Alert>>,
    /// Alerts received, including those dropped to stay within the bound.
    pub alert_count: u64,
    pub diagnoses: Vec<Envelope<Diagnosis>>,
    /// Ordered by ledger position, after the folded ones.
    pub remediations: Vec<Envelope<Remediation>>,
    pub approvals: Vec<Envelope<Approval>>,
    /// Its investigations, oldest first, at most `max_investigations_per_incident` (beyond
    /// it the oldest finished one goes first).
    pub investigations: Vec<Investigation>,
    /// The records dropped from memory, as the chain check needs them.
    pub folded: FoldedChain,
    /// The earliest diagnosis or record time seen (opened, for incidents without alerts).
    pub first_occurred_at: Option<DateTime<Utc>>,
    /// Ids of the messages in the lists above.
    held: HashSet<Uuid>,
    /// Ids of messages dropped from the lists, most recent kept.
    dropped: InsertionOrdered<Uuid, ()>,
    pub tick: u64,
    max_events: usize,
    max_investigations: usize,
    max_steps: usize,
}

impl Incident {
    pub fn new(id: &str, cluster: &str, config: &TimelineConfig) -> Self {
        Self {
            id: id.to_owned(),
            cluster: cluster.to_owned(),
            alerts: Vec::new(),
            alert_count: 0,
            diagnoses: Vec::new(),
            remediations: Vec::new(),
            approvals: Vec::new(),
            investigations: Vec::new(),
            folded: FoldedChain::new(config.max_events_per_incident),
            first_occurred_at: None,
            held: HashSet::new(),
            dropped: InsertionOrdered::new(config.max_dropped_ids_per_incident),
            tick: 0,
            max_events: config.max_events_per_incident,
            max_investigations: config.max_investigations_per_incident,
            max_steps: config.max_steps_per_investigation,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.diagnoses.is_empty()
            && self.remediations.is_empty()
            && self.approvals.is_empty()
            && self.investigations.is_empty()
    }

    pub fn events(&self) -> usize {
        self.alerts.len() + self.diagnoses.len() + self.remediations.len() + self.approvals.len()
    }

    /// Entries per table of [`Table::PER_INCIDENT`], for the size gauges.
    pub fn sizes(&self) -> PerIncident {
        [
            self.alerts.len(),
            self.diagnoses.len(),
            self.remediations.len(),
            self.approvals.len(),
            self.dropped.len(),
            self.investigations.len(),
        ]
    }

    /// Whether `id` was not applied yet (held, or dropped and still remembered); marks it held.
    fn first_time(&mut self, id: Uuid) -> bool {
        !self.dropped.contains(&id) && self.held.insert(id)
    }

    fn noticed(&mut self, at: DateTime<Utc>) {
        self.first_occurred_at = Some(self.first_occurred_at.map_or(at, |first| first.min(at)));
    }

    pub fn add_alert(&mut self, alert: Envelope<Alert>, metrics: &TimelineMetrics) -> bool {
        if !self.first_time(alert.id) {
            return false;
        }
        self.alert_count += 1;
        self.alerts.push(alert);
        self.alerts.sort_by_key(|a| a.payload.received_at);
        self.trim(metrics);
        true
    }

    /// Moves an alert out (a diagnosis claimed it for another incident).
    pub fn take_alert(&mut self, id: Uuid) -> Option<Envelope<Alert>> {
        let index = self.alerts.iter().position(|a| a.id == id)?;
        self.held.remove(&id);
        self.alert_count = self.alert_count.saturating_sub(1);
        Some(self.alerts.remove(index))
    }

    pub fn add_diagnosis(
        &mut self,
        diagnosis: Envelope<Diagnosis>,
        metrics: &TimelineMetrics,
    ) -> bool {
        if !self.first_time(diagnosis.id) {
            return false;
        }
        if self.cluster.is_empty() {
            self.cluster = diagnosis.cluster.clone();
        }
        self.noticed(diagnosis.occurred_at);
        self.diagnoses.push(diagnosis);
        self.diagnoses.sort_by_key(|d| d.occurred_at);
        self.trim(metrics);
        true
    }

    pub fn add_remediation(
        &mut self,
        record: Envelope<Remediation>,
        metrics: &TimelineMetrics,
    ) -> bool {
        if !self.first_time(record.id) {
            return false;
        }
        self.noticed(record.occurred_at);
        if record.payload.ledger.seq < self.folded.records() {
            // Its place in the chain was verified and left memory: it can only be reported.
            self.folded.late(&record);
            self.forget(record.id, metrics);
            return true;
        }
        self.remediations.push(record);
        self.remediations
            .sort_by_key(|r| (r.payload.ledger.seq, r.occurred_at));
        self.trim(metrics);
        true
    }

    pub fn add_approval(
        &mut self,
        approval: Envelope<Approval>,
        metrics: &TimelineMetrics,
    ) -> bool {
        if !self.first_time(approval.id) {
            return false;
        }
        self.approvals.push(approval);
        self.approvals.sort_by_key(|a| a.occurred_at);
        self.trim(metrics);
        true
    }

    /// Applies an investigation request of this incident (queued).
    pub fn add_investigation_request(
        &mut self,
        request: &Envelope<InvestigationRequest>,
        metrics: &TimelineMetrics,
    ) -> bool {
        let changed = self
            .investigation(
                &request.payload.investigation_id,
                request.occurred_at,
                metrics,
            )
            .apply_request(request);
        if changed {
            self.noticed(request.occurred_at);
        }
        changed
    }

    /// Applies an investigator's status, step or report on this incident.
    pub fn add_investigation(
        &mut self,
        event: &Envelope<InvestigationEvent>,
        metrics: &TimelineMetrics,
    ) -> bool {
        let changed = self
            .investigation(&event.payload.investigation_id, event.occurred_at, metrics)
            .apply_event(event);
        if changed {
            self.noticed(event.occurred_at);
        }
        changed
    }

    /// The investigation `id`, added when new (forgetting the oldest finished one, else the
    /// oldest, beyond `max_investigations`).
    fn investigation(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        metrics: &TimelineMetrics,
    ) -> &mut Investigation {
        let index = match self.investigations.iter().position(|i| i.id() == id) {
            Some(index) => index,
            None => {
                if self.investigations.len() >= self.max_investigations {
                    let oldest = self
                        .investigations
                        .iter()
                        .position(|i| !i.is_open())
                        .unwrap_or(0);
                    self.investigations.remove(oldest);
                    metrics.evicted(Table::Investigations, 1);
                }
                self.investigations.push(Investigation::new(
                    id,
                    Some(self.id.clone()),
                    at,
                    self.max_steps,
                ));
                self.investigations.len() - 1
            }
        };
        &mut self.investigations[index]
    }

    /// Drops messages until at most `max_events` are held: storm alerts but the first, then
    /// the oldest of the longest other list (each list keeps its latest message). A dropped
    /// remediation record is verified into the folded chain first.
    fn trim(&mut self, metrics: &TimelineMetrics) {
        while self.events() > self.max_events {
            let table = if self.alerts.len() > 1 {
                Table::Alerts
            } else {
                // On a tie the later one goes first (`max_by_key` keeps the last maximum):
                // approvals, then diagnoses, then audit records.
                let longest = [
                    (self.remediations.len(), Table::Remediations),
                    (self.diagnoses.len(), Table::Diagnoses),
                    (self.approvals.len(), Table::Approvals),
                ]
                .into_iter()
                .max_by_key(|(len, _)| *len)
                .filter(|(len, _)| *len > 1);
                match longest {
                    Some((_, table)) => table,
                    None => break,
                }
            };
            let id = match table {
                Table::Alerts => self.alerts.remove(1).id,
                Table::Diagnoses => self.diagnoses.remove(0).id,
                Table::Approvals => self.approvals.remove(0).id,
                Table::Remediations => {
                    let record = self.remediations.remove(0);
                    self.folded.fold(&record);
                    record.id
                }
                Table::Incidents
                | Table::AlertOwners
                | Table::DroppedIds
                | Table::Investigations
                | Table::Questions => {
                    unreachable!("only the incident's lists are trimmed")
                }
            };
            metrics.evicted(table, 1);
            self.forget(id, metrics);
        }
    }

    fn forget(&mut self, id: Uuid, metrics: &TimelineMetrics) {
        self.held.remove(&id);
        metrics.evicted(Table::DroppedIds, self.dropped.insert(id, ()));
    }
}
