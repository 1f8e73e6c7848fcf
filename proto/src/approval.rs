//! `opsmesh.approvals.v1`: a human's answer to a proposed action.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Envelope, Payload, ledger::canonical_json, signature::Signature, topics};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Approval {
    /// Idempotency key of the proposed action.
    pub idempotency_key: String,
    pub decision: ApprovalDecision,
    /// Authenticated identity of the approver (console user, MCP client).
    pub approver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The reporter's signature over [`signed_bytes`]: the remediator acts only on approvals
    /// signed by a key it trusts, so whoever can write to the topic cannot approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

impl Payload for Approval {
    const SCHEMA: &'static str = topics::APPROVALS;
}

/// What an approval's signature covers: the decision and everything that places it (envelope
/// id, incident, cluster, time), as canonical JSON, so a signed decision cannot be moved to
/// another incident or cluster, and an edited one no longer verifies.
pub fn signed_bytes(envelope: &Envelope<Approval>) -> Vec<u8> {
    let mut payload = envelope.payload.clone();
    payload.signature = None;
    let value = serde_json::json!({
        "schema": envelope.schema,
        "id": envelope.id,
        "incident_id": envelope.incident_id,
        "cluster": envelope.cluster,
        "occurred_at": envelope.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "payload": payload,
    });
    crate::signature::domain_separated(topics::APPROVALS, canonical_json(&value).as_bytes())
}
