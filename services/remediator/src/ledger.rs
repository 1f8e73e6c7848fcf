//! The audit ledger: per incident, a hash chain of [`Remediation`] records published on
//! `opsmesh.remediations.v1` (keyed by incident). [`LedgerView`] is the remediator's
//! replica-independent memory — rebuilt from the topic at start and kept current while
//! running, so any replica knows what every other one planned, started and finished — and
//! [`verify`] checks a chain read back from Kafka, Splunk or an export.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState,
    ledger::GENESIS,
    remediation::{ActionRecord, Remediation},
};

/// One record as the ledger holds it (with its envelope, so later records can derive from it).
#[derive(Debug, Clone)]
pub struct Entry {
    pub occurred_at: DateTime<Utc>,
    pub record: Remediation,
    pub envelope: Envelope<Remediation>,
}

/// One incident's chain.
#[derive(Debug, Clone, Default)]
pub struct IncidentLedger {
    pub entries: Vec<Entry>,
}

impl IncidentLedger {
    pub fn state(&self) -> Option<IncidentState> {
        self.entries.last().map(|e| e.record.state)
    }

    pub fn next_seq(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn last_hash(&self) -> &str {
        self.entries
            .last()
            .map_or(GENESIS, |e| e.record.ledger.hash.as_str())
    }

    pub fn diagnosis_id(&self) -> Option<Uuid> {
        self.entries.first().map(|e| e.record.diagnosis_id)
    }

    fn actions_in(&self, state: IncidentState) -> impl Iterator<Item = (&Entry, &ActionRecord)> {
        self.entries
            .iter()
            .filter(move |e| e.record.state == state)
            .filter_map(|e| e.record.action.as_ref().map(|a| (e, a)))
    }

    /// The plan: one `planned` record per action, in order.
    pub fn planned(&self) -> Vec<ActionRecord> {
        self.actions_in(IncidentState::Planned)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Proposals awaiting a human, with when they were published.
    pub fn proposals(&self) -> Vec<(ActionRecord, DateTime<Utc>)> {
        self.actions_in(IncidentState::AwaitingApproval)
            .filter(|(_, a)| a.approved_by.is_none())
            .map(|(e, a)| (a.clone(), e.occurred_at))
            .collect()
    }

    /// Idempotency keys a human approved, with who.
    pub fn approvals(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter_map(|e| e.record.action.as_ref())
            .filter_map(|a| {
                a.approved_by
                    .as_ref()
                    .map(|by| (a.idempotency_key.clone(), by.clone()))
            })
            .collect()
    }

    /// Whether the intent of `key` was recorded (the action may have run).
    pub fn intended(&self, key: &str) -> bool {
        self.actions_in(IncidentState::Executing)
            .any(|(_, a)| a.idempotency_key == key)
    }

    /// Actions whose result was recorded (they ran, or the target was found done), in order,
    /// with the values recorded for rollback.
    pub fn applied(&self) -> Vec<ActionRecord> {
        self.actions_in(IncidentState::Verifying)
            .map(|(_, a)| a.clone())
            .collect()
    }

    pub fn rolled_back(&self, key: &str) -> bool {
        self.actions_in(IncidentState::RolledBack)
            .any(|(_, a)| a.idempotency_key == key)
    }

    /// When this incident started acting on `target`, if it did.
    pub fn acted_on(&self, target: &str) -> Option<DateTime<Utc>> {
        self.actions_in(IncidentState::Executing)
            .find(|(_, a)| a.target == target)
            .map(|(e, _)| e.occurred_at)
    }

    /// Starts of cluster-changing actions (intents), with their targets.
    pub fn executions(&self) -> impl Iterator<Item = (DateTime<Utc>, &ActionRecord)> {
        self.actions_in(IncidentState::Executing)
            .map(|(e, a)| (e.occurred_at, a))
    }
}

/// Every incident's chain, as read from `opsmesh.remediations.v1`, with indexes kept as
/// records arrive, so the questions asked for every incident (how many act now, what acted
/// recently, what is still open) do not scan every incident ever seen.
#[derive(Debug, Default)]
pub struct LedgerView {
    incidents: HashMap<String, IncidentLedger>,
    /// Incidents neither terminal nor never started.
    open: HashSet<String>,
    /// Incidents executing or verifying.
    acting: HashSet<String>,
    awaiting: HashSet<String>,
    /// Starts of cluster-changing actions (intents), oldest first: when, target, incident.
    executions: VecDeque<(DateTime<Utc>, String, String)>,
}

/// What [`LedgerView::apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Appended,
    /// Already held (our own write read back, or a redelivery).
    Known,
    /// Does not continue the chain it claims to; kept out of the view.
    Rejected,
}

impl LedgerView {
    pub fn incident(&self, id: &str) -> Option<&IncidentLedger> {
        self.incidents.get(id)
    }

    pub fn incidents(&self) -> impl Iterator<Item = (&String, &IncidentLedger)> {
        self.incidents.iter()
    }

    pub fn apply(&mut self, envelope: &Envelope<Remediation>) -> Applied {
        let Some(incident) = envelope.incident_id.clone() else {
            return Applied::Rejected;
        };
        let chain = self.incidents.entry(incident.clone()).or_default();
        let record = &envelope.payload;
        let seq = record.ledger.seq;
        if seq < chain.next_seq() {
            return Applied::Known;
        }
        if seq > chain.next_seq()
            || record.ledger.prev_hash != chain.last_hash()
            || record.computed_hash() != record.ledger.hash
        {
            tracing::warn!(%incident, seq, expected = chain.next_seq(), "ledger record does not continue its chain; ignored");
            return Applied::Rejected;
        }
        chain.entries.push(Entry {
            occurred_at: envelope.occurred_at,
            record: record.clone(),
            envelope: envelope.clone(),
        });
        let state = record.state;
        for (set, member) in [
            (&mut self.open, !state.is_terminal()),
            (
                &mut self.acting,
                matches!(state, IncidentState::Executing | IncidentState::Verifying),
            ),
            (&mut self.awaiting, state == IncidentState::AwaitingApproval),
        ] {
            if member {
                set.insert(incident.clone());
            } else {
                set.remove(&incident);
            }
        }
        if state == IncidentState::Executing
            && let Some(action) = record.action.as_ref().filter(|a| is_mutating(a.kind))
        {
            // Records arrive nearly in time order; keep the deque sorted all the same.
            let at = envelope.occurred_at;
            let position = self.executions.partition_point(|(t, _, _)| *t <= at);
            self.executions
                .insert(position, (at, action.target.clone(), incident));
        }
        Applied::Appended
    }

    /// Incidents not terminal yet (acting, waiting for a human or a slot, stuck).
    pub fn open(&self) -> impl Iterator<Item = (&String, &IncidentLedger)> {
        self.open
            .iter()
            .filter_map(|id| self.incidents.get_key_value(id))
    }

    /// Forgets action starts before `before`: no limit looks back that far.
    pub fn forget_executions_before(&mut self, before: DateTime<Utc>) {
        let stale = self.executions.partition_point(|(t, _, _)| *t < before);
        self.executions.drain(..stale);
    }

    /// Incidents currently executing or verifying (for the concurrency limit).
    pub fn in_flight(&self, except: &str) -> usize {
        self.acting.len() - usize::from(self.acting.contains(except))
    }

    /// Cluster-changing actions of other incidents started since `since`, with targets.
    pub fn executions_since(
        &self,
        since: DateTime<Utc>,
        except: &str,
    ) -> Vec<(DateTime<Utc>, String)> {
        let first = self.executions.partition_point(|(t, _, _)| *t < since);
        self.executions
            .range(first..)
            .filter(|(_, _, incident)| incident != except)
            .map(|(at, target, _)| (*at, target.clone()))
            .collect()
    }

    /// Proposals older than `expiry` that no decision answered.
    pub fn expired_proposals(&self, now: DateTime<Utc>, expiry: Duration) -> Vec<String> {
        let expiry = chrono::Duration::from_std(expiry).unwrap_or(chrono::Duration::MAX);
        self.awaiting
            .iter()
            .filter_map(|id| self.incidents.get_key_value(id))
            .filter(|(_, l)| {
                l.proposals()
                    .iter()
                    .map(|(_, at)| *at)
                    .min()
                    .is_some_and(|first| now - first >= expiry)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn awaiting_approval(&self) -> usize {
        self.awaiting.len()
    }
}

/// Actions that change the cluster (the others only tell people).
pub fn is_mutating(kind: ActionKind) -> bool {
    !matches!(kind, ActionKind::SuggestPolicyFix | ActionKind::Escalate)
}

/// Actions that have an inverse the remediator can apply.
pub fn is_invertible(kind: ActionKind) -> bool {
    matches!(
        kind,
        ActionKind::PatchMemoryLimit
            | ActionKind::RollbackImage
            | ActionKind::ScaleInferenceService
            | ActionKind::ApplyResourceQuota
    )
}

// ---- verification of exported chains ----

/// How a chain broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The record's content does not hash to the hash it carries.
    Edited,
    /// The record's position is not the next one: a record before it is missing.
    Missing,
    /// The record's position was already taken, or it does not link to its predecessor: a
    /// record was inserted, or records were reordered.
    OutOfOrder,
    /// The same envelope id carries different content.
    Conflicting,
}

/// The first record that breaks an incident's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub incident_id: String,
    pub kind: BreakKind,
    /// Position of the record in the input (0-based, over the remediation records).
    pub index: usize,
    pub envelope_id: Uuid,
    pub seq: u64,
    pub detail: String,
}

/// The verdict over every chain of the input.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub records: usize,
    pub incidents: usize,
    /// Exact repeats of a record (at-least-once delivery), not counted as breaks.
    pub duplicates: usize,
    pub breaks: Vec<Break>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// Verifies every incident's chain in `records` (in the order they were read). Exact
/// duplicates (same envelope id and content) are redeliveries and are skipped; anything
/// else out of place is a break, and the first one per incident is reported.
pub fn verify(records: &[Envelope<Remediation>]) -> Report {
    struct Chain {
        next_seq: u64,
        last_hash: String,
        broken: bool,
    }
    let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
    let mut seen: HashMap<Uuid, &Remediation> = HashMap::new();
    let mut report = Report {
        records: records.len(),
        ..Report::default()
    };
    for (index, envelope) in records.iter().enumerate() {
        let incident = envelope.incident_id.clone().unwrap_or_default();
        let record = &envelope.payload;
        let chain = chains.entry(incident.clone()).or_insert_with(|| Chain {
            next_seq: 0,
            last_hash: GENESIS.to_owned(),
            broken: false,
        });
        let fail = |kind: BreakKind, detail: String| Break {
            incident_id: incident.clone(),
            kind,
            index,
            envelope_id: envelope.id,
            seq: record.ledger.seq,
            detail,
        };
        if let Some(previous) = seen.get(&envelope.id) {
            if *previous == record {
                report.duplicates += 1;
                continue;
            }
            if !chain.broken {
                chain.broken = true;
                report.breaks.push(fail(
                    BreakKind::Conflicting,
                    "an earlier record has the same envelope id and different content".into(),
                ));
            }
            continue;
        }
        seen.insert(envelope.id, record);
        if chain.broken {
            continue;
        }
        let computed = record.computed_hash();
        let problem = if computed != record.ledger.hash {
            Some(fail(
                BreakKind::Edited,
                format!(
                    "content hashes to {computed}, the record says {}",
                    record.ledger.hash
                ),
            ))
        } else if record.ledger.seq > chain.next_seq {
            Some(fail(
                BreakKind::Missing,
                format!(
                    "seq {} follows seq {}: {} record(s) missing before it",
                    record.ledger.seq,
                    chain.next_seq as i64 - 1,
                    record.ledger.seq - chain.next_seq
                ),
            ))
        } else if record.ledger.seq < chain.next_seq {
            Some(fail(
                BreakKind::OutOfOrder,
                format!(
                    "seq {} appears after seq {}: inserted or reordered",
                    record.ledger.seq,
                    chain.next_seq - 1
                ),
            ))
        } else if record.ledger.prev_hash != chain.last_hash {
            Some(fail(
                BreakKind::OutOfOrder,
                format!(
                    "prev_hash {} does not link to the previous record ({})",
                    record.ledger.prev_hash, chain.last_hash
                ),
            ))
        } else {
            None
        };
        match problem {
            Some(b) => {
                chain.broken = true;
                report.breaks.push(b);
            }
            None => {
                chain.next_seq += 1;
                chain.last_hash = record.ledger.hash.clone();
            }
        }
    }
    report.incidents = chains.len();
    report
}

/// Reads remediation envelopes from JSON lines: envelopes themselves (`opsmesh tail`), HEC
/// events (`{"event": <envelope>, …}`) or Splunk exports (`{"_raw": "<HEC event or
/// envelope>"}`, or `{"result": {...}}`). Lines of other schemas are skipped; unreadable lines
/// are errors naming the line.
pub fn parse_jsonl(text: &str) -> Result<Vec<Envelope<Remediation>>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let Some(envelope) = find_envelope(value) else {
            continue;
        };
        if envelope.get("schema").and_then(|s| s.as_str())
            != Some(opsmesh_proto::topics::REMEDIATIONS)
        {
            continue;
        }
        let parsed: Envelope<Remediation> =
            serde_json::from_value(envelope).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(parsed);
    }
    Ok(out)
}

fn find_envelope(value: serde_json::Value) -> Option<serde_json::Value> {
    if value.get("schema").is_some() && value.get("payload").is_some() {
        return Some(value);
    }
    if let Some(result) = value.get("result") {
        return find_envelope(result.clone());
    }
    if let Some(event) = value.get("event") {
        return match event {
            serde_json::Value::String(s) => serde_json::from_str(s).ok().and_then(find_envelope),
            other => find_envelope(other.clone()),
        };
    }
    if let Some(raw) = value.get("_raw").and_then(|r| r.as_str()) {
        return serde_json::from_str(raw).ok().and_then(find_envelope);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsmesh_proto::ledger::LedgerLink;

    fn chain(incident: &str, n: u64) -> Vec<Envelope<Remediation>> {
        states(incident, &vec![IncidentState::Planned; n as usize], "")
    }

    fn interleaved() -> Vec<Envelope<Remediation>> {
        let (a, b) = (chain("a", 5), chain("b", 3));
        let mut out = Vec::new();
        for (i, record) in a.iter().enumerate() {
            out.push(record.clone());
            if let Some(x) = b.get(i) {
                out.push(x.clone());
            }
        }
        out
    }

    #[test]
    fn an_intact_export_verifies_and_redeliveries_are_not_breaks() {
        let mut records = interleaved();
        records.push(records[2].clone());
        let report = verify(&records);
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.incidents, report.duplicates), (2, 1));
    }

    #[test]
    fn an_edited_record_is_named() {
        let mut records = chain("a", 4);
        records[2].payload.reason = "nothing to see".into();
        let report = verify(&records);
        assert_eq!(report.breaks.len(), 1);
        let b = &report.breaks[0];
        assert_eq!(
            (b.kind, b.seq, b.envelope_id),
            (BreakKind::Edited, 2, records[2].id)
        );
    }

    #[test]
    fn an_edited_and_rehashed_record_breaks_the_next_link() {
        let mut records = chain("a", 4);
        records[1].payload.reason = "forged".into();
        let prev = records[1].payload.ledger.prev_hash.clone();
        records[1].payload = records[1].payload.clone().seal(1, &prev);
        let b = &verify(&records).breaks[0];
        assert_eq!((b.kind, b.seq), (BreakKind::OutOfOrder, 2));
    }

    #[test]
    fn a_removed_record_is_named() {
        let mut records = chain("a", 4);
        records.remove(1);
        let b = &verify(&records).breaks[0];
        assert_eq!((b.kind, b.seq, b.index), (BreakKind::Missing, 2, 1));
    }

    #[test]
    fn an_inserted_record_is_named() {
        let mut records = chain("a", 4);
        let forged = chain("a", 2).pop().unwrap();
        records.insert(2, forged.clone());
        let b = &verify(&records).breaks[0];
        assert_eq!(b.envelope_id, forged.id, "{b:?}");
        assert_eq!(b.kind, BreakKind::OutOfOrder);
    }

    #[test]
    fn reordered_records_are_named() {
        let mut records = chain("a", 4);
        records.swap(1, 2);
        let b = &verify(&records).breaks[0];
        assert_eq!((b.kind, b.seq, b.index), (BreakKind::Missing, 2, 1));
        let mut records = chain("a", 4);
        records.swap(2, 3);
        let b = &verify(&records).breaks[0];
        assert_eq!((b.kind, b.seq), (BreakKind::Missing, 3));
    }

    #[test]
    fn a_conflicting_duplicate_id_is_named() {
        let mut records = chain("a", 3);
        let mut twin = records[1].clone();
        twin.payload.reason = "other".into();
        records.push(twin);
        let b = &verify(&records).breaks[0];
        assert_eq!(b.kind, BreakKind::Conflicting);
    }

    #[test]
    fn jsonl_accepts_envelopes_hec_events_and_splunk_raw() {
        let records = chain("a", 3);
        let lines = [
            serde_json::to_string(&records[0]).unwrap(),
            serde_json::json!({"sourcetype": "opsmesh:remediation", "event": records[1]})
                .to_string(),
            serde_json::json!({"_raw": serde_json::json!({"event": records[2]}).to_string()})
                .to_string(),
            serde_json::json!({"schema": "opsmesh.alerts.v1", "payload": {}}).to_string(),
        ];
        let parsed = parse_jsonl(&lines.join("\n")).unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(verify(&parsed).ok());
        assert!(parse_jsonl("{not json").unwrap_err().contains("line 1"));
    }

    /// A chain of `states` (reasons `record <seq>`), each with a patch of `target` when it is
    /// `executing`.
    fn states(
        incident: &str,
        states: &[IncidentState],
        target: &str,
    ) -> Vec<Envelope<Remediation>> {
        let mut prev = GENESIS.to_owned();
        states
            .iter()
            .enumerate()
            .map(|(seq, state)| {
                let action = (*state == IncidentState::Executing).then(|| ActionRecord {
                    kind: ActionKind::PatchMemoryLimit,
                    target: target.into(),
                    params: Default::default(),
                    idempotency_key: format!("{incident}:k"),
                    mode: opsmesh_proto::remediation::ActionMode::Auto,
                    approved_by: None,
                });
                let record = Remediation {
                    diagnosis_id: Uuid::nil(),
                    state: *state,
                    action,
                    reason: format!("record {seq}"),
                    projected_effect: None,
                    projected_saving_usd: None,
                    verification: None,
                    ledger: LedgerLink {
                        seq: 0,
                        prev_hash: String::new(),
                        hash: String::new(),
                    },
                }
                .seal(seq as u64, &prev);
                prev = record.ledger.hash.clone();
                Envelope::new("test", "c", Some(incident.into()), record)
            })
            .collect()
    }

    #[test]
    fn the_view_indexes_follow_each_incident_to_its_latest_state() {
        use IncidentState::*;
        let mut view = LedgerView::default();
        let start = Utc::now();
        for e in states("acting", &[Received, Planned, Executing, Verifying], "t/a")
            .iter()
            .chain(&states(
                "done",
                &[Received, Planned, Executing, Verifying, Resolved],
                "t/d",
            ))
            .chain(&states(
                "asking",
                &[Received, Planned, AwaitingApproval],
                "t/x",
            ))
        {
            assert_eq!(view.apply(e), Applied::Appended);
        }
        assert_eq!(view.in_flight("other"), 1);
        assert_eq!(
            view.in_flight("acting"),
            0,
            "an incident does not count itself"
        );
        assert_eq!(view.awaiting_approval(), 1);
        let mut open: Vec<&String> = view.open().map(|(id, _)| id).collect();
        open.sort();
        assert_eq!(open, ["acting", "asking"]);
        let targets = |v: &LedgerView, except| -> Vec<String> {
            v.executions_since(start, except)
                .into_iter()
                .map(|(_, t)| t)
                .collect()
        };
        assert_eq!(
            targets(&view, "acting"),
            ["t/d"],
            "other incidents' actions only"
        );
        assert_eq!(targets(&view, "none").len(), 2);
        view.forget_executions_before(Utc::now() + chrono::Duration::seconds(1));
        assert!(targets(&view, "none").is_empty());
    }

    #[test]
    fn the_view_rejects_records_that_do_not_continue_the_chain() {
        let records = chain("a", 3);
        let mut view = LedgerView::default();
        assert_eq!(view.apply(&records[0]), Applied::Appended);
        assert_eq!(view.apply(&records[2]), Applied::Rejected);
        assert_eq!(view.apply(&records[1]), Applied::Appended);
        assert_eq!(view.apply(&records[1]), Applied::Known);
        assert_eq!(view.incident("a").unwrap().next_seq(), 2);
    }
}
