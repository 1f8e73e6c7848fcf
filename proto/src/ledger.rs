//! The audit chain: each remediation record links to the previous one of its incident by
//! SHA-256 over canonical JSON, so an edit, removal, insertion or reordering is detectable
//! from Kafka, from Splunk or from an export. The remediator signs each record's hash, and
//! publishes signed [`LedgerHeads`] now and then, so a chain cut short (its last records
//! removed) is detectable too.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Envelope, Payload, signature::Signature, topics};

/// Hash of "no previous record".
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LedgerLink {
    /// 0 for the first record of an incident.
    pub seq: u64,
    pub prev_hash: String,
    /// SHA-256 hex of `prev_hash` + canonical JSON of the record with `hash` set to "" and no
    /// signature; from [`SCHEME_PLACED`] on, with the envelope's id, incident and time too.
    pub hash: String,
    /// How `hash` is computed: absent for records written before [`SCHEME_PLACED`] (the
    /// payload alone), which verifiers accept only before the first signed record of a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<u8>,
    /// The remediator's signature over `hash` (see [`record_signed_bytes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// Hash scheme covering the record and its placement: envelope id, incident id, time.
pub const SCHEME_PLACED: u8 = 2;

/// What a record's signature covers: its hash, which covers everything else.
pub fn record_signed_bytes(hash: &str) -> Vec<u8> {
    crate::signature::domain_separated(topics::REMEDIATIONS, hash.as_bytes())
}

/// `opsmesh.ledger-heads.v1`: the last record of each chain a remediator wrote to since its
/// previous heads, signed. A chain read back shorter than a signed head says was truncated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LedgerHeads {
    pub heads: Vec<ChainHead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ChainHead {
    pub incident_id: String,
    pub seq: u64,
    pub hash: String,
}

impl Payload for LedgerHeads {
    const SCHEMA: &'static str = topics::LEDGER_HEADS;
}

/// What a heads message's signature covers: the heads and the envelope placing them.
pub fn heads_signed_bytes(envelope: &Envelope<LedgerHeads>) -> Vec<u8> {
    let value = serde_json::json!({
        "id": envelope.id,
        "source": envelope.source,
        "cluster": envelope.cluster,
        "occurred_at": envelope.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "heads": envelope.payload.heads,
    });
    crate::signature::domain_separated(topics::LEDGER_HEADS, canonical_json(&value).as_bytes())
}

/// Canonical JSON: object keys sorted (serde_json's map is a BTreeMap), no whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    // `serde_json::Value` keeps keys sorted without the `preserve_order` feature, so a round
    // trip through `Value` canonicalises field order.
    serde_json::to_string(value).expect("JSON values always serialize")
}

/// Hash of a record given its canonical JSON (with the hash field blanked).
pub fn chain_hash(prev_hash: &str, canonical_record: &str) -> String {
    let digest = Sha256::new()
        .chain_update(prev_hash.as_bytes())
        .chain_update(canonical_record.as_bytes())
        .finalize();
    hex::encode(digest)
}
