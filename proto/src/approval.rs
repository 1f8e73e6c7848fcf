//! `opsmesh.approvals.v1`: a human's answer to a proposed action.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Payload, topics};

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
