//! The last word before an action runs: its guards and the policy, checked again on what the
//! cluster shows now and on what other incidents did since it was planned. An approval can
//! arrive an hour after its proposal; by then other incidents may have used the rate budget,
//! acted on the same target or taken every slot, and the target may have been scaled.

use super::*;
use crate::{guards, policy};

/// What the checks before executing decided.
pub(super) enum Admission {
    Run,
    /// Every action slot is taken; the incident waits for one (up to `policy.queue_timeout`).
    Wait,
    /// A refusal was recorded (or the plan's earlier actions are being put back).
    Refused,
}

impl Engine {
    /// Checks `next` (its `observed_*` params just read from the cluster) against its guards
    /// and the policy; records the refusal when one fails.
    pub(super) async fn admit(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        next: &ActionRecord,
    ) -> Result<Admission, HandlerError> {
        if let Err(violation) = guards::check_execute(next, &self.config.policy) {
            let reason = violation.to_string();
            return self
                .refuse_before_executing(incident, ledger, next, violation.code(), reason)
                .await;
        }
        let Err(refusal) = policy::allows_now(
            next.kind,
            &next.target,
            &next.params,
            &self.config.policy,
            &self.history(incident),
            Utc::now(),
        ) else {
            return Ok(Admission::Run);
        };
        let mut reason = refusal.reason;
        if refusal.code == SLOT_REFUSAL {
            // Counted from the last record: the approval, or the plan of a resumed incident.
            let waited = ledger
                .entries
                .last()
                .map(|e| (Utc::now() - e.occurred_at).to_std().unwrap_or_default())
                .unwrap_or_default();
            let timeout = self.config.policy.queue_timeout;
            if waited < timeout {
                tracing::info!(%incident, %reason, "waiting for a free action slot");
                return Ok(Admission::Wait);
            }
            reason = format!(
                "{reason}; no slot freed within policy.queue_timeout ({})",
                humantime_serde::re::humantime::format_duration(timeout)
            );
        }
        self.refuse_before_executing(incident, ledger, next, refusal.code, reason)
            .await
    }

    /// Records that `next` was refused just before it ran (counted under `code`); a plan whose
    /// earlier actions ran puts them back first.
    async fn refuse_before_executing(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        next: &ActionRecord,
        code: &'static str,
        reason: String,
    ) -> Result<Admission, HandlerError> {
        self.metrics.refusals.with_label_values(&[code]).inc();
        let reason = format!("refused ({code}) just before executing: {reason}");
        tracing::warn!(%incident, action = %next.kind, target = %next.target, %reason, "action refused");
        if ledger.state() == Some(IncidentState::Verifying) {
            self.fail(incident, next, &reason).await?;
        } else {
            self.record(
                incident,
                Decision::new(IncidentState::Refused, reason).action(Some(next.clone())),
            )
            .await?;
        }
        Ok(Admission::Refused)
    }
}
