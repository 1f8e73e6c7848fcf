//! Climbing a runbook's ladder: after a step's verification failed, either the step made
//! things worse (roll back and escalate), the ladder has no step left (the same), or the next
//! step's intent is recorded — with the failed verification — and the incident goes on
//! executing. Every decision reads the ledger only, so a replica that resumes the incident
//! after a crash decides the same and never runs a step twice (each step has its own
//! idempotency key).

use serde_json::Value;

use super::*;
use crate::plan::ladder::{self, Next, READY_BEFORE};

impl Engine {
    /// What follows the failed step `laddered` (an action of it that is on a ladder);
    /// `ready_after` is how many predictor containers its last health check found ready.
    pub(super) async fn climb(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        laddered: &ActionRecord,
        verification: Verification,
        why: String,
        ready_after: Option<u64>,
    ) -> Result<(), HandlerError> {
        let step = ladder::step_of(laddered);
        let before = laddered.params.get(READY_BEFORE).and_then(Value::as_u64);
        if let Some(worse) = ladder::made_worse(before, ready_after) {
            let why = format!("{why}; step {step} made things worse ({worse})");
            return self.give_up(incident, ledger, verification, why).await;
        }
        let observed = match self.cluster.observe(laddered).await {
            Ok(o) => o,
            Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
            Err(ActError::Refused(e)) => {
                let why = format!("{why}; the ladder cannot go on: {e}");
                return self.give_up(incident, ledger, verification, why).await;
            }
        };
        let next = ladder::next_step(
            incident,
            &self.library,
            laddered,
            &observed,
            &self.config.policy,
        );
        let mut next = match next {
            Next::Run(record) => record,
            Next::End(end) => {
                let why = format!("{why}; ladder ends after step {step}: {end}");
                return self.give_up(incident, ledger, verification, why).await;
            }
        };
        if let Some(ready) = ready_after {
            next.params.insert(READY_BEFORE.into(), ready.into());
        }
        let number = ladder::step_of(&next);
        let why = format!(
            "{why}; step {step} did not help and did not make things worse: ladder step {number} of at most {}",
            ladder::Rung::of(&next).map_or(number, |r| r.max_steps)
        );
        match self
            .begin(
                incident,
                ledger,
                next,
                Some((why.clone(), verification.clone())),
            )
            .await?
        {
            // This incident already holds its slot; a full house means the limit shrank.
            Some(Step::NoSlot) => {
                let why = format!("{why}; no action slot is free for it");
                self.give_up(incident, ledger, verification, why).await
            }
            _ => Ok(()),
        }
    }
}
