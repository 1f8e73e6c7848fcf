//! Verification of exported chains (`opsmesh audit verify`): each incident's hash chain,
//! the remediator's signature on every record, signed chain heads against truncation, and a
//! comparison of two copies of the ledger (Kafka and a Splunk export).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use uuid::Uuid;

use opsmesh_proto::{
    Envelope,
    ledger::{GENESIS, LedgerHeads, heads_signed_bytes, record_signed_bytes},
    remediation::Remediation,
};
use opsmesh_runtime::signing::KeyRing;

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
    /// The record carries no signature where one is required.
    Unsigned,
    /// The record's signature is not by a trusted key, or does not match.
    BadSignature,
    /// A signed chain head names a record the chain no longer has (its end was cut off), or
    /// one with another hash.
    Truncated,
}

/// The first record that breaks an incident's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub incident_id: String,
    pub kind: BreakKind,
    /// Position of the record in the input (0-based, over the remediation records); for a
    /// truncation, the number of records read.
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
    /// Whether signatures were checked (trusted keys were given).
    pub signatures_checked: bool,
    /// Records whose signature verified.
    pub signed: usize,
    /// Records from before signing (no hash scheme), accepted only at the start of a chain.
    pub legacy: usize,
    /// Signed heads that verified and were compared with the chains.
    pub heads_checked: usize,
    /// Heads not used: unsigned, or not by a trusted key (each with why).
    pub heads_rejected: Vec<String>,
    pub breaks: Vec<Break>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// What to check beyond the hash chain: signatures by `keys`, and chain `heads`.
#[derive(Default)]
pub struct Checks<'a> {
    /// Public keys trusted to have signed records and heads. Without them signatures and
    /// heads are not checked.
    pub keys: Option<&'a KeyRing>,
    pub heads: &'a [Envelope<LedgerHeads>],
}

/// Verifies the hash chains only (no signatures, no heads).
pub fn verify(records: &[Envelope<Remediation>]) -> Report {
    Checks::default().verify(records)
}

struct Chain {
    /// Hash of each record read so far, by seq.
    hashes: Vec<String>,
    signed: bool,
    broken: bool,
}

impl Chain {
    fn last_hash(&self) -> &str {
        self.hashes.last().map_or(GENESIS, String::as_str)
    }

    fn next_seq(&self) -> u64 {
        self.hashes.len() as u64
    }
}

impl Checks<'_> {
    /// Verifies every incident's chain in `records` (in the order they were read). Exact
    /// duplicates (same envelope id and content) are redeliveries and are skipped; anything
    /// else out of place is a break, and the first one per incident is reported.
    pub fn verify(&self, records: &[Envelope<Remediation>]) -> Report {
        let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
        let mut seen: HashMap<Uuid, &Envelope<Remediation>> = HashMap::new();
        let mut report = Report {
            records: records.len(),
            signatures_checked: self.keys.is_some(),
            ..Report::default()
        };
        for (index, envelope) in records.iter().enumerate() {
            let incident = envelope.incident_id.clone().unwrap_or_default();
            let chain = chains.entry(incident.clone()).or_insert_with(|| Chain {
                hashes: Vec::new(),
                signed: false,
                broken: false,
            });
            let fail = |kind: BreakKind, detail: String| Break {
                incident_id: incident.clone(),
                kind,
                index,
                envelope_id: envelope.id,
                seq: envelope.payload.ledger.seq,
                detail,
            };
            if let Some(previous) = seen.get(&envelope.id) {
                if same_record(previous, envelope) {
                    report.duplicates += 1;
                } else if !chain.broken {
                    chain.broken = true;
                    report.breaks.push(fail(
                        BreakKind::Conflicting,
                        "an earlier record has the same envelope id and different content".into(),
                    ));
                }
                continue;
            }
            seen.insert(envelope.id, envelope);
            if chain.broken {
                continue;
            }
            let problem = link_problem(envelope, chain)
                .or_else(|| self.signature_problem(envelope, chain, &mut report));
            match problem {
                Some((kind, detail)) => {
                    chain.broken = true;
                    report.breaks.push(fail(kind, detail));
                }
                None => chain.hashes.push(envelope.payload.ledger.hash.clone()),
            }
        }
        self.check_heads(&chains, records.len(), &mut report);
        report.incidents = chains.len();
        report
    }

    fn signature_problem(
        &self,
        envelope: &Envelope<Remediation>,
        chain: &mut Chain,
        report: &mut Report,
    ) -> Option<(BreakKind, String)> {
        let keys = self.keys?;
        let link = &envelope.payload.ledger;
        if link.scheme.is_none() && link.signature.is_none() {
            if chain.signed {
                return Some((
                    BreakKind::Unsigned,
                    "an unsigned record of the old format follows a signed one".into(),
                ));
            }
            report.legacy += 1;
            return None;
        }
        match keys.verify(&record_signed_bytes(&link.hash), link.signature.as_ref()) {
            Ok(()) => {
                chain.signed = true;
                report.signed += 1;
                None
            }
            Err(opsmesh_runtime::signing::SignatureError::Missing) => Some((
                BreakKind::Unsigned,
                "the record carries no signature".into(),
            )),
            Err(e) => Some((BreakKind::BadSignature, e.to_string())),
        }
    }

    /// Compares each trusted head with the chain it names.
    fn check_heads(&self, chains: &BTreeMap<String, Chain>, read: usize, report: &mut Report) {
        let Some(keys) = self.keys else {
            return;
        };
        // The furthest signed head per incident is the one to hold the chain to.
        let mut furthest: BTreeMap<&str, (u64, &str, Uuid)> = BTreeMap::new();
        for envelope in self.heads {
            let heads = &envelope.payload;
            if let Err(e) = keys.verify(&heads_signed_bytes(envelope), heads.signature.as_ref()) {
                report.heads_rejected.push(format!(
                    "heads {} from {}: {e}",
                    envelope.id, envelope.source
                ));
                continue;
            }
            report.heads_checked += 1;
            for head in &heads.heads {
                let entry = furthest.entry(head.incident_id.as_str()).or_insert((
                    head.seq,
                    head.hash.as_str(),
                    envelope.id,
                ));
                if head.seq > entry.0 {
                    *entry = (head.seq, head.hash.as_str(), envelope.id);
                }
            }
        }
        for (incident, (seq, hash, heads_id)) in furthest {
            let chain = chains.get(incident);
            if chain.is_some_and(|c| c.broken) {
                continue; // already reported
            }
            let held = chain.and_then(|c| c.hashes.get(seq as usize));
            let detail = match held {
                Some(h) if h == hash => continue,
                Some(h) => format!(
                    "signed heads {heads_id} name seq {seq} with hash {hash}; the chain's record has {h}"
                ),
                None => format!(
                    "signed heads {heads_id} name seq {seq}; the chain ends at seq {}",
                    chain.map_or(-1, |c| c.next_seq() as i64 - 1)
                ),
            };
            report.breaks.push(Break {
                incident_id: incident.to_owned(),
                kind: BreakKind::Truncated,
                index: read,
                envelope_id: heads_id,
                seq,
                detail,
            });
        }
    }
}

/// Whether two records with one envelope id say the same thing: a redelivery, or two
/// replicas writing the same deterministic record (an expired proposal) at slightly different
/// times. Only the time, and so the hash and signature, may differ.
fn same_record(a: &Envelope<Remediation>, b: &Envelope<Remediation>) -> bool {
    let content = |e: &Envelope<Remediation>| {
        let mut record = e.payload.clone();
        record.ledger.hash.clear();
        record.ledger.signature = None;
        (e.incident_id.clone(), record)
    };
    content(a) == content(b)
}

/// The first way `envelope` fails to continue `chain`, if any.
fn link_problem(envelope: &Envelope<Remediation>, chain: &Chain) -> Option<(BreakKind, String)> {
    let link = &envelope.payload.ledger;
    let computed = envelope.computed_hash();
    if computed != link.hash {
        return Some((
            BreakKind::Edited,
            format!(
                "content hashes to {computed}, the record says {}",
                link.hash
            ),
        ));
    }
    let next = chain.next_seq();
    if link.seq > next {
        return Some((
            BreakKind::Missing,
            format!(
                "seq {} follows seq {}: {} record(s) missing before it",
                link.seq,
                next as i64 - 1,
                link.seq - next
            ),
        ));
    }
    if link.seq < next {
        return Some((
            BreakKind::OutOfOrder,
            format!(
                "seq {} appears after seq {}: inserted or reordered",
                link.seq,
                next - 1
            ),
        ));
    }
    if link.prev_hash != chain.last_hash() {
        return Some((
            BreakKind::OutOfOrder,
            format!(
                "prev_hash {} does not link to the previous record ({})",
                link.prev_hash,
                chain.last_hash()
            ),
        ));
    }
    None
}

/// Where two copies of the ledger first disagree, per incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub incident_id: String,
    pub seq: u64,
    pub detail: String,
}

/// Compares two copies of the ledger (`left` named `left_name`, e.g. Kafka, and `right`,
/// e.g. a Splunk export) and names, per incident, the first record where they differ: one
/// lacks it, or they hold different records at that position.
pub fn compare(
    (left_name, left): (&str, &[Envelope<Remediation>]),
    (right_name, right): (&str, &[Envelope<Remediation>]),
) -> Vec<Difference> {
    fn index(records: &[Envelope<Remediation>]) -> BTreeMap<(&str, u64), (Uuid, &str)> {
        let mut out = BTreeMap::new();
        for e in records {
            let incident = e.incident_id.as_deref().unwrap_or_default();
            out.entry((incident, e.payload.ledger.seq))
                .or_insert((e.id, e.payload.ledger.hash.as_str()));
        }
        out
    }
    let (l, r) = (index(left), index(right));
    let mut keys: Vec<&(&str, u64)> = l.keys().chain(r.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out: Vec<Difference> = Vec::new();
    for (incident, seq) in keys {
        if out.last().is_some_and(|d| d.incident_id == *incident) {
            continue;
        }
        let detail = match (l.get(&(incident, *seq)), r.get(&(incident, *seq))) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => format!(
                "{left_name} has record {} (hash {}), {right_name} has {} (hash {})",
                a.0, a.1, b.0, b.1
            ),
            (Some(a), None) => format!("only {left_name} has record {} (hash {})", a.0, a.1),
            (None, Some(b)) => format!("only {right_name} has record {} (hash {})", b.0, b.1),
            (None, None) => unreachable!("the key came from one of the two"),
        };
        out.push(Difference {
            incident_id: (*incident).to_owned(),
            seq: *seq,
            detail,
        });
    }
    out
}

/// Reads ledger envelopes from JSON lines: envelopes themselves (`opsmesh tail`), HEC events
/// (`{"event": <envelope>, …}`) or Splunk exports (`{"_raw": "<HEC event or envelope>"}`, or
/// `{"result": {...}}`). Remediation records and ledger heads are kept; lines of other
/// schemas are skipped; unreadable lines are errors naming the line.
pub fn parse_jsonl(text: &str) -> Result<Exported, String> {
    let mut out = Exported::default();
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
        let at_line = |e: serde_json::Error| format!("line {}: {e}", n + 1);
        match envelope.get("schema").and_then(|s| s.as_str()) {
            Some(opsmesh_proto::topics::REMEDIATIONS) => out
                .records
                .push(serde_json::from_value(envelope).map_err(at_line)?),
            Some(opsmesh_proto::topics::LEDGER_HEADS) => out
                .heads
                .push(serde_json::from_value(envelope).map_err(at_line)?),
            _ => {}
        }
    }
    Ok(out)
}

/// A ledger as read back from somewhere.
#[derive(Debug, Default)]
pub struct Exported {
    pub records: Vec<Envelope<Remediation>>,
    pub heads: Vec<Envelope<LedgerHeads>>,
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
mod tests;
