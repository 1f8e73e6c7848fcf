//! Publishing a human's decision on a proposed action to `opsmesh.approvals.v1` — the one path
//! the console and the MCP tools share. Each decision is signed with the reporter's approval
//! key: the remediator acts only on approvals signed by a key it trusts.

use std::sync::Arc;

use serde::Deserialize;

use opsmesh_proto::{
    Envelope,
    approval::{Approval, ApprovalDecision, signed_bytes},
};
use opsmesh_runtime::{ConfigError, Publisher, secret::SecretSource, signing::Signer};

use crate::timeline::{IncidentStore, PendingApproval};

/// Longest comment accepted with a decision.
pub const MAX_COMMENT_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no incident {0:?}")]
    UnknownIncident(String),
    #[error("incident {0:?} has no action awaiting approval")]
    NothingPending(String),
    #[error("the action awaiting approval is {pending:?}, not {requested:?}")]
    WrongAction { pending: String, requested: String },
    #[error("{approver} already decided ({decision:?}) on this action")]
    AlreadyDecided {
        approver: String,
        decision: ApprovalDecision,
    },
    #[error("comment longer than {MAX_COMMENT_CHARS} characters")]
    CommentTooLong,
    #[error(
        "decisions cannot be signed: reporter.approvals.signing_key is not configured, and the remediator refuses unsigned approvals"
    )]
    NoSigningKey,
    #[error("publishing the decision failed: {0}")]
    Publish(String),
}

/// `[reporter.approvals]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// Ed25519 private key (PKCS#8 PEM) every decision is signed with; its public half goes
    /// to the remediator's `approvals.verify_keys`. Unset: decisions are refused (503).
    pub signing_key: SecretSource,
}

/// Takes decisions for the console and the MCP tools.
#[derive(Clone)]
pub struct Decider {
    store: Arc<IncidentStore>,
    publisher: Publisher,
    signer: Option<Arc<Signer>>,
}

impl Decider {
    pub fn new(
        config: &ApprovalsConfig,
        store: Arc<IncidentStore>,
        publisher: Publisher,
    ) -> Result<Self, ConfigError> {
        let signer = Signer::load("reporter.approvals.signing_key", &config.signing_key)?;
        if signer.is_none() {
            tracing::warn!(
                "reporter.approvals.signing_key is not set: approve/reject from the console and MCP are refused"
            );
        }
        Ok(Self {
            store,
            publisher,
            signer: signer.map(Arc::new),
        })
    }

    /// Publishes `decision` on the action `idempotency_key` (the pending one when `None`) of
    /// `incident_id` by `approver`, once the incident's latest record awaits exactly that
    /// action and nobody decided on it yet. Returns once the bus acknowledged it; the decision
    /// is applied to the store at once so views show it before the timeline consumer reads
    /// it back.
    pub async fn decide(
        &self,
        incident_id: &str,
        idempotency_key: Option<&str>,
        decision: ApprovalDecision,
        approver: &str,
        comment: Option<String>,
    ) -> Result<(Envelope<Approval>, PendingApproval), DecideError> {
        let (store, publisher) = (&self.store, &self.publisher);
        let signer = self.signer.as_ref().ok_or(DecideError::NoSigningKey)?;
        // One decision at a time, so two clicks cannot both pass the checks below.
        static DECIDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = DECIDING.lock().await;
        if store.summary(incident_id).is_none() {
            return Err(DecideError::UnknownIncident(incident_id.to_owned()));
        }
        let pending = store
            .pending_approval(incident_id)
            .ok_or_else(|| DecideError::NothingPending(incident_id.to_owned()))?;
        if let Some(key) = idempotency_key
            && key != pending.idempotency_key
        {
            return Err(DecideError::WrongAction {
                pending: pending.idempotency_key.clone(),
                requested: key.to_owned(),
            });
        }
        if let Some(done) = &pending.decided {
            return Err(DecideError::AlreadyDecided {
                approver: done.approver.clone(),
                decision: done.decision,
            });
        }
        let comment = comment
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        if comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
        {
            return Err(DecideError::CommentTooLong);
        }
        let mut envelope = Envelope::new(
            "opsmesh-reporter",
            pending.cluster.clone(),
            Some(incident_id.to_owned()),
            Approval {
                idempotency_key: pending.idempotency_key.clone(),
                decision,
                approver: approver.to_owned(),
                comment,
                signature: None,
            },
        );
        envelope.payload.signature = Some(signer.sign(&signed_bytes(&envelope)));
        publisher
            .publish(incident_id, &envelope)
            .await
            .map_err(|e| DecideError::Publish(e.to_string()))?;
        tracing::info!(
            incident = %incident_id,
            key = %pending.idempotency_key,
            ?decision,
            %approver,
            "decision published"
        );
        store.apply_approval(envelope.clone());
        Ok((envelope, pending))
    }
}
