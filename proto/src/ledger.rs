//! The audit chain: each remediation record links to the previous one of its incident by
//! SHA-256 over canonical JSON, so an edit, removal, insertion or reordering is detectable
//! from Kafka, from Splunk or from an export.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Hash of "no previous record".
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LedgerLink {
    /// 0 for the first record of an incident.
    pub seq: u64,
    pub prev_hash: String,
    /// SHA-256 hex of `prev_hash` + canonical JSON of the record with `hash` set to "".
    pub hash: String,
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
