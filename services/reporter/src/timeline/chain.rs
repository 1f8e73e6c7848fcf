//! The audit-chain check of an incident's remediation records, kept incremental so that
//! records dropped from memory (`max_events_per_incident`) do not make an intact chain look
//! broken: each record is verified against its predecessor when it leaves memory, and what
//! the check needs of it (its position, its hash, the problems it had) stays.

use chrono::{DateTime, Utc};
use serde::Serialize;

use opsmesh_proto::{Envelope, IncidentState, ledger::GENESIS, remediation::Remediation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainStatus {
    /// No remediation records yet.
    Empty,
    /// Every record links to the previous one and carries its own hash.
    Intact,
    /// A record was edited, removed, inserted or reordered (or is still missing).
    Broken,
}

/// Verification of an incident's audit chain with the proto ledger functions.
#[derive(Debug, Clone, Serialize)]
pub struct AuditChain {
    pub status: ChainStatus,
    /// Records checked, including those dropped from memory.
    pub records: u64,
    /// The earliest records, verified one by one and then dropped from this reporter's memory
    /// (`reporter.timeline.max_events_per_incident`); `opsmesh audit verify` reads them all.
    pub dropped_from_memory: u64,
    pub head_hash: Option<String>,
    pub problems: Vec<String>,
}

pub(super) fn is_outcome(state: IncidentState) -> bool {
    matches!(
        state,
        IncidentState::Resolved
            | IncidentState::RolledBack
            | IncidentState::Escalated
            | IncidentState::Refused
            | IncidentState::Advised
            | IncidentState::DryRun
            | IncidentState::NoAction
    )
}

/// What remains of the records already dropped from memory: how many, the last one's hash,
/// the problems they had (the first `max_problems`; the others counted) and the first outcome
/// among them.
#[derive(Debug, Clone)]
pub(super) struct FoldedChain {
    records: u64,
    head_hash: Option<String>,
    problems: Vec<String>,
    problems_not_kept: u64,
    max_problems: usize,
    pub first_outcome_at: Option<DateTime<Utc>>,
}

impl FoldedChain {
    pub fn new(max_problems: usize) -> Self {
        Self {
            records: 0,
            head_hash: None,
            problems: Vec::new(),
            problems_not_kept: 0,
            max_problems,
            first_outcome_at: None,
        }
    }

    /// Records at positions below this were dropped from memory.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Verifies `record` as the chain's next one, then keeps only what the check needs of it.
    pub fn fold(&mut self, record: &Envelope<Remediation>) {
        let mut found = Vec::new();
        check_link(
            self.records,
            self.head_hash.as_deref().unwrap_or(GENESIS),
            record,
            &mut found,
        );
        for problem in found {
            self.note(problem);
        }
        self.records += 1;
        self.head_hash = Some(record.payload.ledger.hash.clone());
        if self.first_outcome_at.is_none() && is_outcome(record.payload.state) {
            self.first_outcome_at = Some(record.occurred_at);
        }
    }

    /// A record whose position was already verified and dropped: it cannot be placed any
    /// more, so the chain is reported broken (the whole ledger has the answer).
    pub fn late(&mut self, record: &Envelope<Remediation>) {
        self.note(format!(
            "seq {} arrived after the records up to seq {} were verified and dropped from memory (a duplicate or late record); run opsmesh audit verify on the whole ledger",
            record.payload.ledger.seq,
            self.records - 1
        ));
    }

    fn note(&mut self, problem: String) {
        if self.problems.len() < self.max_problems {
            self.problems.push(problem);
        } else {
            self.problems_not_kept += 1;
        }
    }

    /// Checks the records still in memory (in ledger order) as the continuation of the
    /// folded ones: positions continue without gaps, the first links to the last folded
    /// record (or [`GENESIS`]), each to the previous record's hash, and each carries the
    /// hash [`Envelope::computed_hash`] gives.
    pub fn verify<'a>(
        &self,
        kept: impl IntoIterator<Item = &'a Envelope<Remediation>>,
    ) -> AuditChain {
        let mut problems = self.problems.clone();
        if self.problems_not_kept > 0 {
            problems.push(format!(
                "… and {} more problems among the records dropped from memory",
                self.problems_not_kept
            ));
        }
        let mut position = self.records;
        let mut head = self.head_hash.clone();
        for envelope in kept {
            check_link(
                position,
                head.as_deref().unwrap_or(GENESIS),
                envelope,
                &mut problems,
            );
            head = Some(envelope.payload.ledger.hash.clone());
            position += 1;
        }
        AuditChain {
            status: match (position, problems.is_empty()) {
                (0, _) => ChainStatus::Empty,
                (_, true) => ChainStatus::Intact,
                (_, false) => ChainStatus::Broken,
            },
            records: position,
            dropped_from_memory: self.records,
            head_hash: head,
            problems,
        }
    }
}

/// The problems of `envelope` at `position` after a record hashed `expected_prev`.
fn check_link(
    position: u64,
    expected_prev: &str,
    envelope: &Envelope<Remediation>,
    problems: &mut Vec<String>,
) {
    let link = &envelope.payload.ledger;
    if link.seq != position {
        problems.push(format!(
            "record at position {position} carries seq {} (missing, duplicated or reordered record)",
            link.seq
        ));
    }
    if link.prev_hash != expected_prev {
        problems.push(format!(
            "seq {}: prev_hash {} does not match the previous record's hash {}",
            link.seq,
            short(&link.prev_hash),
            short(expected_prev)
        ));
    }
    let computed = envelope.computed_hash();
    if link.hash != computed {
        problems.push(format!(
            "seq {}: hash {} does not match its content (computed {})",
            link.seq,
            short(&link.hash),
            short(&computed)
        ));
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
