//! Chains for tests.

use chrono::Utc;
use uuid::Uuid;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState,
    ledger::{GENESIS, LedgerLink},
    remediation::{ActionMode, ActionRecord, Remediation},
};
use opsmesh_runtime::signing::Signer;

/// A chain of `n` `planned` records.
pub fn chain(incident: &str, n: u64) -> Vec<Envelope<Remediation>> {
    states(
        incident,
        &vec![IncidentState::Planned; n as usize],
        "",
        None,
    )
}

/// Chains `a` (5 records) and `b` (3), interleaved as a topic would hold them.
pub fn interleaved() -> Vec<Envelope<Remediation>> {
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

/// A chain of `states` (reasons `record <seq>`), each with a patch of `target` when it is
/// `executing`, signed by `signer` if given.
pub fn states(
    incident: &str,
    states: &[IncidentState],
    target: &str,
    signer: Option<&Signer>,
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
                mode: ActionMode::Auto,
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
                    scheme: None,
                    signature: None,
                },
            };
            let mut envelope = Envelope::new("test", "c", Some(incident.into()), record);
            envelope.occurred_at = Utc::now();
            super::seal(&mut envelope, seq as u64, &prev, signer);
            prev = envelope.payload.ledger.hash.clone();
            envelope
        })
        .collect()
}
