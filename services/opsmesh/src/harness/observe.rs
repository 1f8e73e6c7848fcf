//! What the harness sees on the bus (alerts, diagnoses, remediations, incident records),
//! stamped with virtual time, and what it tells about each incident's outcome.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use opsmesh_proto::{
    Envelope,
    alert::Alert,
    diagnosis::Diagnosis,
    incident::{IncidentRecord, IncidentStatus},
    investigation::{InvestigationEvent, InvestigationRequest},
    remediation::Remediation,
    topics::{
        ALERTS, DIAGNOSES, INCIDENTS, INVESTIGATION_REQUESTS, INVESTIGATIONS, REMEDIATIONS,
        TELEMETRY,
    },
};
use opsmesh_runtime::bus::Subscription;
use opsmesh_sim::{Simulator, scenario::Outcome};

use super::investigations::Tracked;

/// The topics the harness watches.
pub(super) const WATCHED: [&str; 7] = [
    ALERTS,
    DIAGNOSES,
    REMEDIATIONS,
    INCIDENTS,
    TELEMETRY,
    INVESTIGATION_REQUESTS,
    INVESTIGATIONS,
];

/// What the runner saw on the bus, stamped with virtual time.
#[derive(Default)]
pub(super) struct Observed {
    pub(super) alerts: Vec<(Duration, Envelope<Alert>)>,
    pub(super) diagnoses: Vec<(Duration, Envelope<Diagnosis>)>,
    pub(super) remediations: Vec<(Duration, Envelope<Remediation>)>,
    /// The diagnoser's incident records: the only place a `cleared` outcome shows.
    pub(super) records: Vec<(Duration, Envelope<IncidentRecord>)>,
    /// The collector passes published, by stamp: a pass stamps all its records with one
    /// `observed_at` (partitions may interleave two passes' records).
    pub(super) telemetry_passes: HashSet<String>,
    /// Investigations, in the order first seen.
    pub(super) investigations: Vec<Tracked>,
}

impl Observed {
    pub(super) fn incidents(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let source: Vec<Option<String>> = if self.diagnoses.is_empty() {
            self.alerts
                .iter()
                .map(|(_, e)| e.incident_id.clone())
                .collect()
        } else {
            self.diagnoses
                .iter()
                .map(|(_, e)| e.incident_id.clone())
                .collect()
        };
        for id in source.into_iter().flatten() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    pub(super) fn final_state(&self, incident: &str) -> Option<(Duration, Outcome)> {
        let cleared = self.records.iter().find(|(_, e)| {
            e.payload.incident_id == incident && e.payload.status == IncidentStatus::Cleared
        });
        if let Some((t, _)) = cleared {
            return Some((*t, Outcome::Cleared));
        }
        self.remediations
            .iter()
            .rev()
            .find(|(_, e)| e.incident_id.as_deref() == Some(incident))
            .map(|(t, e)| (*t, Outcome::State(e.payload.state)))
    }

    /// Every incident diagnosed so far has a record from the remediator: no diagnosis is
    /// still on its way to it.
    pub(super) fn diagnoses_taken_up(&self) -> bool {
        self.diagnoses.iter().all(|(_, d)| {
            self.remediations
                .iter()
                .any(|(_, r)| r.incident_id == d.incident_id)
        })
    }

    /// Every incident seen so far reached an outcome (none seen yet: not settled).
    pub(super) fn settled(&self) -> bool {
        let incidents = self.incidents();
        !incidents.is_empty()
            && incidents
                .iter()
                .all(|i| self.final_state(i).is_some_and(|(_, s)| s.is_final()))
    }
}

/// Only the pass stamp of a telemetry record (the rest is not read).
#[derive(serde::Deserialize)]
struct Stamped {
    payload: Stamp,
}

#[derive(serde::Deserialize)]
struct Stamp {
    observed_at: String,
}

/// Records every message of the watched topics until the subscription ends.
pub(super) async fn watch(
    mut sub: Box<dyn Subscription>,
    sim: Simulator,
    seen: Arc<Mutex<Observed>>,
) {
    while let Ok(message) = sub.recv().await {
        let at = sim.elapsed();
        let mut o = seen.lock().expect("observed lock");
        match message.topic.as_str() {
            ALERTS => {
                if let Ok(e) = Envelope::<Alert>::from_slice(&message.payload) {
                    o.alerts.push((at, e));
                }
            }
            DIAGNOSES => {
                if let Ok(e) = Envelope::<Diagnosis>::from_slice(&message.payload) {
                    o.diagnoses.push((at, e));
                }
            }
            REMEDIATIONS => {
                if let Ok(e) = Envelope::<Remediation>::from_slice(&message.payload) {
                    o.remediations.push((at, e));
                }
            }
            INCIDENTS => {
                if let Ok(e) = Envelope::<IncidentRecord>::from_slice(&message.payload) {
                    o.records.push((at, e));
                }
            }
            TELEMETRY => {
                if let Ok(stamp) = serde_json::from_slice::<Stamped>(&message.payload) {
                    o.telemetry_passes.insert(stamp.payload.observed_at);
                }
            }
            INVESTIGATION_REQUESTS => {
                if let Ok(e) = Envelope::<InvestigationRequest>::from_slice(&message.payload) {
                    o.investigation_requested(&e.payload);
                }
            }
            INVESTIGATIONS => {
                if let Ok(e) = Envelope::<InvestigationEvent>::from_slice(&message.payload) {
                    o.investigation_event(e.incident_id, e.payload);
                }
            }
            _ => {}
        }
        let _ = sub.store(&message);
    }
}
