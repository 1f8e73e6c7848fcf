//! A human's decision on a proposal: believed only when signed by a trusted reporter key and
//! given for this cluster, then recorded (rejected, or approved and driven on).

use super::*;

/// How the reason of a refused (unsigned, mis-signed) approval's record begins.
const REFUSED_APPROVAL: &str = "refused an approval";
/// Refused approvals recorded per incident; later ones are only logged and counted.
const MAX_RECORDED_REFUSALS: usize = 3;

impl Engine {
    /// Records the decision on a proposal; `true` when the incident may go on.
    pub(super) async fn decide(
        &self,
        incident: &str,
        envelope: &Envelope<Approval>,
    ) -> Result<bool, HandlerError> {
        let incident = incident.to_owned();
        let approval = &envelope.payload;
        let ledger = self.ledger(&incident);
        let approver = approval.approver.trim();
        if approver.is_empty() {
            tracing::warn!(%incident, "approval without an approver identity ignored");
            return Ok(false);
        }
        if ledger.state() != Some(IncidentState::AwaitingApproval) {
            tracing::info!(%incident, key = %approval.idempotency_key, state = ?ledger.state(), "no proposal awaits this decision; ignored");
            return Ok(false);
        }
        let Some((proposal, proposed_at)) = ledger
            .proposals()
            .into_iter()
            .find(|(p, _)| p.idempotency_key == approval.idempotency_key)
        else {
            tracing::info!(%incident, key = %approval.idempotency_key, "unknown idempotency key; ignored");
            return Ok(false);
        };
        if ledger.approvals().contains_key(&proposal.idempotency_key) {
            tracing::info!(%incident, key = %proposal.idempotency_key, "already approved; repeat ignored");
            return Ok(false);
        }
        if let Err(why) = self.keys.check_approval(envelope) {
            return self
                .refuse_approval(&ledger, envelope, &proposal, &why.to_string())
                .await
                .map(|()| false);
        }
        if envelope.cluster != self.home_cluster {
            let why = format!(
                "it was given for cluster {:?}, this remediator acts on {:?}",
                envelope.cluster, self.home_cluster
            );
            return self
                .refuse_approval(&ledger, envelope, &proposal, &why)
                .await
                .map(|()| false);
        }
        let expiry = chrono::Duration::from_std(self.config.approvals.expiry)
            .unwrap_or(chrono::Duration::MAX);
        let comment = approval
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        if Utc::now() - proposed_at >= expiry {
            return self.expire(&incident).await.map(|()| false);
        }
        match approval.decision {
            ApprovalDecision::Reject => {
                self.metrics.refusals.with_label_values(&["rejected"]).inc();
                self.record(
                    &incident,
                    Decision::new(
                        IncidentState::Refused,
                        format!(
                            "{} on {} rejected by {approver}{comment} (approval {})",
                            proposal.kind, proposal.target, envelope.id
                        ),
                    )
                    .action(Some(proposal.clone()))
                    .caused_by(envelope),
                )
                .await
                .map(|()| false)
            }
            ApprovalDecision::Approve => {
                let mut approved = proposal.clone();
                approved.approved_by = Some(approver.to_owned());
                self.record(
                    &incident,
                    Decision::new(
                        IncidentState::AwaitingApproval,
                        format!(
                            "{} on {} approved by {approver}{comment} (approval {})",
                            proposal.kind, proposal.target, envelope.id
                        ),
                    )
                    .action(Some(approved))
                    .caused_by(envelope),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Records that an approval was not believed (the proposal keeps waiting for one that
    /// is); after [`MAX_RECORDED_REFUSALS`] such records per incident, only logs and counts,
    /// so whoever floods the topic with forged approvals cannot grow the ledger.
    pub(super) async fn refuse_approval(
        &self,
        ledger: &IncidentLedger,
        envelope: &Envelope<Approval>,
        proposal: &ActionRecord,
        why: &str,
    ) -> Result<(), HandlerError> {
        let incident = approval_incident(envelope);
        let approver = envelope.payload.approver.trim();
        self.metrics
            .refusals
            .with_label_values(&["approval_untrusted"])
            .inc();
        tracing::warn!(%incident, %approver, approval = %envelope.id, %why, "approval refused");
        let recorded = ledger
            .entries
            .iter()
            .filter(|e| e.record.reason.starts_with(REFUSED_APPROVAL))
            .count();
        if recorded >= MAX_RECORDED_REFUSALS {
            return Ok(());
        }
        self.record(&incident, Decision::new(IncidentState::AwaitingApproval, format!(
                "{REFUSED_APPROVAL} by {approver:?} (approval {}): {why}; {} on {} still awaits a signed decision",
                envelope.id, proposal.kind, proposal.target
            )).action(Some(proposal.clone())).caused_by(envelope))
        .await
    }
}

/// The incident an approval is for: its envelope's, or the idempotency key's first part.
pub(super) fn approval_incident(envelope: &Envelope<Approval>) -> String {
    match &envelope.incident_id {
        Some(i) => i.clone(),
        None => envelope
            .payload
            .idempotency_key
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}
