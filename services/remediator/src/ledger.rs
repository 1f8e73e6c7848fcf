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
use uuid::Uuid;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState,
    ledger::{GENESIS, record_signed_bytes},
    remediation::{ActionRecord, Remediation},
};
use opsmesh_runtime::signing::Signer;

mod verify;
pub use verify::{
    Break, BreakKind, Checks, Difference, Exported, Report, compare, parse_jsonl, verify,
};

/// How the reason of an escalation for lack of progress begins (an investigation's report
/// never reopens one).
pub const STUCK: &str = "stuck in ";

/// Seals `envelope` as record `seq` of its incident's chain, after `prev_hash`, and signs its
/// hash when the remediator has a ledger key.
pub fn seal(
    envelope: &mut Envelope<Remediation>,
    seq: u64,
    prev_hash: &str,
    signer: Option<&Signer>,
) {
    envelope.seal(seq, prev_hash);
    envelope.payload.ledger.signature =
        signer.map(|s| s.sign(&record_signed_bytes(&envelope.payload.ledger.hash)));
}

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

    /// Where the current attempt begins: after the escalation an investigation's report
    /// reopened (the first escalated record, when another follows it; an incident is reopened
    /// once at most), else at the first record. The plan, proposals, approvals and results
    /// below are the current attempt's.
    fn attempt_start(&self) -> usize {
        self.entries
            .iter()
            .position(|e| e.record.state == IncidentState::Escalated)
            .filter(|&i| i + 1 < self.entries.len())
            .map_or(0, |i| i + 1)
    }

    /// The records of the current attempt.
    pub fn attempt(&self) -> &[Entry] {
        &self.entries[self.attempt_start()..]
    }

    /// Whether an investigation's report reopened this incident after its escalation.
    pub fn reopened(&self) -> bool {
        self.attempt_start() > 0
    }

    fn actions_in(&self, state: IncidentState) -> impl Iterator<Item = (&Entry, &ActionRecord)> {
        self.attempt()
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
        self.attempt()
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
            || envelope.computed_hash() != record.ledger.hash
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
    !matches!(
        kind,
        ActionKind::AdviseCapacity | ActionKind::SuggestPolicyFix | ActionKind::Escalate
    )
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

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::{
        fixtures::{chain, states},
        *,
    };

    #[test]
    fn the_view_indexes_follow_each_incident_to_its_latest_state() {
        use IncidentState::*;
        let mut view = LedgerView::default();
        let start = Utc::now();
        for e in states(
            "acting",
            &[Received, Planned, Executing, Verifying],
            "t/a",
            None,
        )
        .iter()
        .chain(&states(
            "done",
            &[Received, Planned, Executing, Verifying, Resolved],
            "t/d",
            None,
        ))
        .chain(&states(
            "asking",
            &[Received, Planned, AwaitingApproval],
            "t/x",
            None,
        )) {
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
