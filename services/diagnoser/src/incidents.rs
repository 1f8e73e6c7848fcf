//! Alerts into incidents, following the lifecycle in [`opsmesh_proto::incident`]: the same
//! fingerprint coalesces into one open incident (a storm is one incident and one diagnosis),
//! related alerts for the same target within a window attach to it, every terminal outcome
//! closes it, and after a quiet period the fingerprint firing again opens a new incident
//! linked to the previous one. The state is mirrored to the compacted `opsmesh.incidents.v1`
//! so a restarted or newly assigned replica rebuilds it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use chrono::{DateTime, Utc};

use opsmesh_proto::{
    ActionKind, RootCause,
    alert::{Alert, AlertStatus},
    diagnosis::ActionProposal,
    incident::{IncidentRecord, IncidentStatus},
};

use crate::{rules::Finding, tables::TableMetrics};

/// Incidents (open and recently closed fingerprints) kept by default: weeks of alerts from a
/// large estate. Each is a few hundred bytes.
pub const DEFAULT_MAX_INCIDENTS: usize = 100_000;

/// What an alert means for incidents.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A new incident (possibly the recurrence of a closed one): diagnose it.
    Open(IncidentRecord),
    /// Part of an incident already being handled, or of one closed within the quiet period:
    /// record it (the count grows), do not diagnose again.
    Attach(IncidentRecord),
    /// The sender says the condition ended: the open incident closes as `cleared`.
    Clear(IncidentRecord),
    /// Nothing to record: a clear for nothing open, or the opening alert of a closed incident
    /// delivered again.
    Ignore,
    /// A new incident, but the table is at its capacity and holds only open incidents, none
    /// of which may be forgotten (its outcome would be lost, and its next alert would open a
    /// second incident): the alert is refused (the caller dead-letters it, where it stays
    /// visible and can be replayed).
    Full,
}

/// When an alert happened, for every incident decision about it.
///
/// The sender's own time when it states one: Alertmanager's `startsAt`, or the trigger time a
/// scheduled Splunk search writes into its sid (`scheduler__…_at_<epoch>_<n>`). Otherwise the
/// time the receiver took it in. The sender's clock is the one that matters for "did this
/// recur after the quiet period": it is the time of the event, not of its delivery (a backlog
/// replayed after an outage must not look like a fresh recurrence), and it is the clock the
/// scenario runner drives (it stamps both with virtual time, which runs far ahead of the wall
/// clock; wall time would never see a 30-minute quiet period pass in a two-second run).
/// A sender whose clock is off only shifts its own alerts against each other consistently;
/// where its clock meets ours — the close time — [`Incidents::close`] takes the later of the
/// two, so a skewed sender shortens or lengthens the quiet period by at most the skew.
pub fn alert_time(alert: &Alert) -> DateTime<Utc> {
    alert
        .starts_at
        .or_else(|| alert.sid.as_deref().and_then(splunk_trigger_time))
        .unwrap_or(alert.received_at)
}

/// The scheduled time in a Splunk scheduler sid (`scheduler__admin__app__RMD5…_at_1700000000_42`).
fn splunk_trigger_time(sid: &str) -> Option<DateTime<Utc>> {
    let (_, rest) = sid.rsplit_once("_at_")?;
    let epoch = rest.split('_').next()?.parse::<i64>().ok()?;
    DateTime::from_timestamp(epoch, 0)
}

pub struct Incidents {
    /// The quiet period after a close.
    cooldown: chrono::Duration,
    related_window: chrono::Duration,
    /// Fingerprints held at most.
    capacity: usize,
    metrics: TableMetrics,
    state: Mutex<State>,
}

/// Every fingerprint's latest record, and the open ones indexed by target and by incident id
/// (asked about on every alert and every outcome: no scan over every incident ever seen), the
/// closed ones by close time (the oldest is forgotten first when the table is full).
#[derive(Default)]
struct State {
    by_fingerprint: HashMap<String, IncidentRecord>,
    open_by_target: HashMap<String, HashSet<String>>,
    open_by_incident: HashMap<String, String>,
    closed_by_age: BTreeSet<(DateTime<Utc>, String)>,
    /// Whether a closed incident was ever forgotten: from then on a fingerprint without a
    /// record may have had incidents, so its new incident gets an id that cannot repeat one.
    forgot_any: bool,
}

/// When a closed record was closed (its last alert for records that did not say).
fn closed_at(record: &IncidentRecord) -> DateTime<Utc> {
    record.closed_at.unwrap_or(record.last_alert_at)
}

impl State {
    /// Whether a record for a fingerprint not held yet can be stored.
    fn has_room(&self, capacity: usize) -> bool {
        self.by_fingerprint.len() < capacity || !self.closed_by_age.is_empty()
    }

    /// Stores `record` as its fingerprint's latest, first forgetting the longest-closed
    /// incident if the table is full; `false` (nothing stored) when only open incidents are
    /// left to forget.
    fn insert(&mut self, record: IncidentRecord, capacity: usize, metrics: &TableMetrics) -> bool {
        if !self.by_fingerprint.contains_key(&record.fingerprint) {
            if !self.has_room(capacity) {
                return false;
            }
            while self.by_fingerprint.len() >= capacity {
                let Some((_, fingerprint)) = self.closed_by_age.pop_first() else {
                    break;
                };
                self.by_fingerprint.remove(&fingerprint);
                self.forgot_any = true;
                metrics.evictions.inc();
            }
        }
        if let Some(old) = self.by_fingerprint.get(&record.fingerprint) {
            if let Some(target) = &old.target
                && let Some(fingerprints) = self.open_by_target.get_mut(target)
            {
                fingerprints.remove(&old.fingerprint);
                if fingerprints.is_empty() {
                    self.open_by_target.remove(target);
                }
            }
            self.open_by_incident.remove(&old.incident_id);
            self.closed_by_age
                .remove(&(closed_at(old), old.fingerprint.clone()));
        }
        if record.status.is_open() {
            if let Some(target) = &record.target {
                self.open_by_target
                    .entry(target.clone())
                    .or_default()
                    .insert(record.fingerprint.clone());
            }
            self.open_by_incident
                .insert(record.incident_id.clone(), record.fingerprint.clone());
        } else {
            self.closed_by_age
                .insert((closed_at(&record), record.fingerprint.clone()));
        }
        self.by_fingerprint
            .insert(record.fingerprint.clone(), record);
        metrics.entries.set(self.by_fingerprint.len() as i64);
        true
    }
}

impl Incidents {
    pub fn new(
        cooldown: Duration,
        related_window: Duration,
        capacity: usize,
        metrics: TableMetrics,
    ) -> Self {
        Self {
            cooldown: chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::minutes(30)),
            related_window: chrono::Duration::from_std(related_window)
                .unwrap_or(chrono::Duration::minutes(15)),
            capacity: capacity.max(1),
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restores a record read from the compacted topic: at start, and while following what
    /// other replicas (and this one) write. The newest wins: a later generation, then within
    /// one generation a close over an open record (a close is final), then the later alert,
    /// then more alerts (a storm's alerts can share a time) — so this replica's own record,
    /// read back after a newer one was applied, does not set it back.
    pub fn restore(&self, record: IncidentRecord) {
        let rank = |r: &IncidentRecord| {
            (
                r.generation,
                !r.status.is_open(),
                r.last_alert_at,
                r.alert_count,
            )
        };
        let mut state = self.state();
        if state
            .by_fingerprint
            .get(&record.fingerprint)
            .is_none_or(|have| rank(&record) >= rank(have))
        {
            self.store(&mut state, record);
        }
    }

    /// Stores a record, counting and logging one that does not fit.
    fn store(&self, state: &mut State, record: IncidentRecord) {
        let (fingerprint, incident) = (record.fingerprint.clone(), record.incident_id.clone());
        if !state.insert(record, self.capacity, &self.metrics) {
            self.metrics.refused.inc();
            tracing::warn!(
                %fingerprint,
                %incident,
                capacity = self.capacity,
                "incident table full of open incidents (diagnoser.max_incidents): record not kept"
            );
        }
    }

    pub fn count(&self) -> usize {
        self.state().by_fingerprint.len()
    }

    /// The latest record of the incident with this id, open or closed. A scan: only on-demand
    /// investigations look incidents up by id, and they are rare.
    pub fn find(&self, incident_id: &str) -> Option<IncidentRecord> {
        self.state()
            .by_fingerprint
            .values()
            .find(|r| r.incident_id == incident_id)
            .cloned()
    }

    /// What one alert means at `now` (its [`alert_time`]), without changing the state: the
    /// caller publishes the returned record (and the diagnosis), then calls
    /// [`Incidents::apply`] — so a failed publish leaves the state as it was and the retry
    /// decides the same.
    pub fn on_alert(&self, alert_id: uuid::Uuid, alert: &Alert, now: DateTime<Utc>) -> Decision {
        let state = self.state();
        let previous = state.by_fingerprint.get(&alert.fingerprint);
        if alert.status == AlertStatus::Resolved {
            return match previous {
                Some(record) if record.status.is_open() => {
                    Decision::Clear(closed(record, IncidentStatus::Cleared, now))
                }
                _ => Decision::Ignore,
            };
        }
        if let Some(record) = previous {
            if record.first_alert_id == alert_id {
                // The alert that opened the incident, delivered again (at-least-once): while
                // open, decide the same, so the same diagnosis id is published and dropped
                // downstream; once closed it was already counted.
                return if record.status.is_open() {
                    Decision::Open(record.clone())
                } else {
                    Decision::Ignore
                };
            }
            // Open: a storm is one incident. Closed within the quiet period: a re-fire right
            // after the fix, counted on the closed incident where it can be seen. An alert
            // stamped before the close belongs to the episode that was handled.
            // (A closed record without a close time is from a release that did not always
            // write one: its last alert stands in.)
            let closed_at = record.closed_at.unwrap_or(record.last_alert_at);
            let quiet = now - closed_at < self.cooldown;
            if record.status.is_open() || quiet {
                return Decision::Attach(attached(record, now));
            }
        }
        // A different alert about a target with an open incident joins that incident.
        if let Some(target) = alert.entity.target()
            && let Some(record) = state
                .open_by_target
                .get(&target)
                .into_iter()
                .flatten()
                .filter_map(|fingerprint| state.by_fingerprint.get(fingerprint))
                .find(|r| now - r.last_alert_at < self.related_window)
        {
            return Decision::Attach(attached(record, now));
        }
        if previous.is_none() && !state.has_room(self.capacity) {
            self.metrics.refused.inc();
            tracing::warn!(
                fingerprint = %alert.fingerprint,
                capacity = self.capacity,
                "incident table full of open incidents (diagnoser.max_incidents): alert refused"
            );
            return Decision::Full;
        }
        let generation = previous.map_or(1, |r| r.generation + 1);
        Decision::Open(IncidentRecord {
            fingerprint: alert.fingerprint.clone(),
            incident_id: match (generation, state.forgot_any) {
                // Its earlier incidents may have been forgotten: `fingerprint` itself may
                // already name one (the remediator would take this one as decided).
                (1, true) => format!("{}-{}", alert.fingerprint, alert_id.simple()),
                (1, false) => alert.fingerprint.clone(),
                _ => format!("{}-{generation}", alert.fingerprint),
            },
            generation,
            status: IncidentStatus::Open,
            target: alert.entity.target(),
            opened_at: now,
            last_alert_at: now,
            closed_at: None,
            alert_count: 1,
            first_alert_id: alert_id,
            recurrence_of: previous.map(|r| r.incident_id.clone()),
            previous_outcome: previous.map(|r| r.status),
        })
    }

    /// Makes a published record the current state.
    pub fn apply(&self, record: IncidentRecord) {
        self.store(&mut self.state(), record);
    }

    /// The open incident with this id, closed with the outcome of the remediator's terminal
    /// `state` reported at `at`; publish it, then [`Incidents::apply`] it. `None` when the
    /// state does not end an incident, or the incident is unknown or already closed (the
    /// first outcome is the incident's only one) — except an escalation the remediator took
    /// up again for an investigation's proposals: its later outcome replaces `escalated`.
    pub fn close(
        &self,
        incident_id: &str,
        state: opsmesh_proto::IncidentState,
        at: DateTime<Utc>,
    ) -> Option<IncidentRecord> {
        let outcome = IncidentStatus::closed_by(state)?;
        let state = self.state();
        if let Some(record) = state
            .open_by_incident
            .get(incident_id)
            .and_then(|fingerprint| state.by_fingerprint.get(fingerprint))
        {
            return Some(closed(record, outcome, at));
        }
        // Escalated is final for the remediator but for that reopening, so a different
        // terminal state after it can only be the reopened incident's end.
        state
            .by_fingerprint
            .values()
            .find(|r| {
                r.incident_id == incident_id
                    && r.status == IncidentStatus::Escalated
                    && outcome != IncidentStatus::Escalated
            })
            .map(|record| closed(record, outcome, at))
    }
}

/// `record` with one more alert at `now`.
fn attached(record: &IncidentRecord, now: DateTime<Utc>) -> IncidentRecord {
    let mut record = record.clone();
    record.alert_count += 1;
    record.last_alert_at = record.last_alert_at.max(now);
    record
}

/// `record` closed with `outcome` at `at`. The close is never earlier than the last alert the
/// incident absorbed: `at` is our clock (or the sender's, for a clear) and the alerts are on
/// the sender's (see [`alert_time`]); the quiet period must start after the episode it
/// follows whichever clock runs ahead.
fn closed(record: &IncidentRecord, outcome: IncidentStatus, at: DateTime<Utc>) -> IncidentRecord {
    let mut record = record.clone();
    record.status = outcome;
    record.closed_at = Some(at.max(record.last_alert_at));
    record
}

/// The sentence a recurrence's diagnosis carries, and whether it may only escalate: a
/// recurrence of an incident that was left unfixed (escalated, advised, refused) goes to
/// humans with its history instead of being acted on again as if it were new.
pub fn recurrence_note(record: &IncidentRecord) -> Option<(String, bool)> {
    let previous = record.recurrence_of.as_deref()?;
    let outcome = record.previous_outcome;
    let ended = outcome.map_or_else(|| "unknown".to_owned(), |o| o.to_string());
    let unfixed = outcome.is_some_and(IncidentStatus::left_unfixed);
    let note = if unfixed {
        format!(
            "Recurrence of incident {previous}, which ended {ended} without a fix: \
             escalating with that history instead of acting again."
        )
    } else {
        format!("Recurrence of incident {previous}, which ended {ended}.")
    };
    Some((note, unfixed))
}

/// Shapes the finding for a recurrence: the explanation and summary name the previous
/// incident, and for one left unfixed the only recommendation is `escalate` (the remediator
/// plans it under the runbook's escalate section and ends `escalated`), citing the evidence
/// the withheld actions cited. Nothing-wrong findings stay as they are: with no fault there
/// is nothing to act on blindly.
pub fn shape_recurrence(finding: &mut Finding, record: &IncidentRecord, alert_evidence: &str) {
    let Some((note, escalate_only)) = recurrence_note(record) else {
        return;
    };
    finding.summary = format!(
        "{} (recurrence of {})",
        finding.summary,
        record.recurrence_of.as_deref().unwrap_or_default()
    );
    finding.explanation = format!("{note} {}", finding.explanation);
    if !escalate_only || finding.root_cause == RootCause::None {
        return;
    }
    let withheld: Vec<String> = finding
        .actions
        .iter()
        .filter(|a| a.kind != ActionKind::Escalate)
        .map(|a| a.kind.to_string())
        .collect();
    if !withheld.is_empty() {
        finding
            .explanation
            .push_str(&format!(" Not proposed again: {}.", withheld.join(", ")));
    }
    let mut evidence_ids = vec![alert_evidence.to_owned()];
    for id in finding.actions.iter().flat_map(|a| &a.evidence_ids) {
        if !evidence_ids.contains(id) {
            evidence_ids.push(id.clone());
        }
    }
    let target = finding
        .target
        .clone()
        .or_else(|| record.target.clone())
        .unwrap_or_else(|| "unknown".into());
    let mut params = BTreeMap::new();
    params.insert(
        "recurrence_of".to_owned(),
        serde_json::json!(record.recurrence_of),
    );
    params.insert(
        "previous_outcome".to_owned(),
        serde_json::json!(record.previous_outcome),
    );
    finding.actions = vec![ActionProposal {
        kind: ActionKind::Escalate,
        target,
        params,
        evidence_ids,
        rationale: note,
    }];
    // Retrieval follows the recommendation: the runbook's escalate section.
    finding.query.push_str(" escalate");
}

#[cfg(test)]
mod tests;
