//! `opsmesh.remediations.v1`: every decision, refusal and action of the remediator, each a
//! record of the incident's hash-chained audit ledger.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    ActionKind, Envelope, IncidentState, Payload,
    ledger::{LedgerLink, SCHEME_PLACED},
    topics,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Remediation {
    /// Diagnosis envelope this decision answers.
    pub diagnosis_id: Uuid,
    /// State the incident entered.
    pub state: IncidentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRecord>,
    /// Why: the policy or rule that decided, in words.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_saving_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Position in the incident's audit chain.
    pub ledger: LedgerLink,
}

impl Payload for Remediation {
    const SCHEMA: &'static str = topics::REMEDIATIONS;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionMode {
    Auto,
    Approve,
    DryRun,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ActionRecord {
    pub kind: ActionKind,
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// incident + action + target: the action runs at most once per key.
    pub idempotency_key: String,
    pub mode: ActionMode,
    /// Authenticated identity of the human who approved this action (approve mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Verification {
    pub attempts: u32,
    pub healthy: bool,
    pub detail: String,
}

impl Envelope<Remediation> {
    /// Links this record after `prev_hash` at position `seq` and computes its hash, which
    /// covers the envelope's id, incident and time as well as the record.
    pub fn seal(&mut self, seq: u64, prev_hash: &str) {
        self.payload.ledger = LedgerLink {
            seq,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
            scheme: Some(SCHEME_PLACED),
            signature: None,
        };
        self.payload.ledger.hash = self.computed_hash();
    }

    /// The hash this record should carry, by its scheme: SHA-256 over `prev_hash` and the
    /// canonical JSON of the record with `ledger.hash` blank and no signature (and, from
    /// [`SCHEME_PLACED`] on, the envelope's id, incident and time beside it).
    pub fn computed_hash(&self) -> String {
        let mut blank = self.payload.clone();
        blank.ledger.hash.clear();
        blank.ledger.signature = None;
        let record = serde_json::to_value(&blank).expect("records serialize");
        let value = match self.payload.ledger.scheme {
            None => record,
            Some(_) => serde_json::json!({
                "id": self.id,
                "incident_id": self.incident_id,
                "occurred_at": self
                    .occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                "record": record,
            }),
        };
        crate::ledger::chain_hash(
            &self.payload.ledger.prev_hash,
            &crate::ledger::canonical_json(&value),
        )
    }
}
