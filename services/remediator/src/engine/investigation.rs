//! An investigation's report taking up an incident the rules escalated with nothing to do:
//! its proposals are planned like a diagnosis' (same plan, same policy, same records), every
//! cluster-changing one waits for a human, and from there approval, execution, verification
//! and rollback are the incident's ordinary procedure.

use opsmesh_proto::investigation::{InvestigationEvent, InvestigationReport};

use super::*;
use crate::investigation::{self, HUMAN_APPROVES, Ignored};

impl Engine {
    /// A message of `opsmesh.investigations.v1`. `Some` when the incident continues in the
    /// background (it rests awaiting approval in practice).
    pub async fn on_investigation(
        &self,
        envelope: &Envelope<InvestigationEvent>,
    ) -> Result<Option<Pending>, HandlerError> {
        let (incident, report) = match investigation::report_of(envelope) {
            Ok(found) => found,
            Err(ignored) => {
                self.ignore_investigation(envelope, ignored);
                return Ok(None);
            }
        };
        let _guard = self.locks.lock(incident).await;
        let ledger = self.ledger(incident);
        let mut progress = Progress::default();
        let step = match investigation::may_take_up(&ledger) {
            Ok(()) => match self.take_up(incident, envelope, report).await {
                Ok(()) => self.advance(incident, None, &mut progress).await,
                Err(e) => Err(e),
            },
            Err(ignored) => {
                self.ignore_investigation(envelope, ignored);
                if ledger.reopened() && ledger.state() == Some(IncidentState::Planned) {
                    // Redelivered after a crash between the plan and its proposals: the
                    // ledger says where to go on from.
                    self.advance(incident, None, &mut progress).await
                } else {
                    return Ok(None);
                }
            }
        };
        if let Err(HandlerError::Permanent(e)) = step {
            return Err(HandlerError::Permanent(e));
        }
        Ok(self.follow_up(incident, Task::new(None), progress, step, true))
    }

    fn ignore_investigation(&self, envelope: &Envelope<InvestigationEvent>, ignored: Ignored) {
        self.metrics
            .investigations_ignored
            .with_label_values(&[ignored.code()])
            .inc();
        let investigation = &envelope.payload.investigation_id;
        let incident = envelope.incident_id.as_deref().unwrap_or_default();
        if ignored == Ignored::NotReport {
            tracing::debug!(%investigation, %incident, reason = ignored.code(), "investigation update ignored: {}", ignored.why());
        } else {
            tracing::info!(%investigation, %incident, message = %envelope.id, reason = ignored.code(), "investigation report ignored: {}", ignored.why());
        }
    }

    /// Plans the report's proposals for the escalated `incident` (every cluster-changing
    /// action in `approve` mode at least), or records why one was refused.
    async fn take_up(
        &self,
        incident: &str,
        envelope: &Envelope<InvestigationEvent>,
        report: &InvestigationReport,
    ) -> Result<(), HandlerError> {
        let id = &envelope.payload.investigation_id;
        let diagnosis = investigation::as_diagnosis(incident, id, report, &self.library);
        let policy = investigation::requiring_approval(&self.config.policy);
        // A proposal waiting for a human holds no action slot; the slot is taken (or waited
        // for) when the approved action starts, where the policy is checked again.
        let history = History {
            in_flight: 0,
            ..self.history(incident)
        };
        let source = format!(
            "{}: {}; root cause {}",
            investigation::source(id, envelope.id),
            diagnosis.summary,
            diagnosis.root_cause
        );
        match self.plan_for(incident, &envelope.cluster, &diagnosis, &policy, &history) {
            Plan::Act { actions, .. } => {
                let mut cause = Some(envelope);
                for mut a in actions {
                    if is_mutating(a.record.kind) {
                        a.reason = format!("{source}; {}; {HUMAN_APPROVES}", a.reason);
                    } else {
                        a.reason = format!("{source}; {}", a.reason);
                    }
                    let mut decision = drive::planned(incident, a);
                    if let Some(report) = cause.take() {
                        decision = decision.caused_by(report).reopening();
                    }
                    self.record(incident, decision).await?;
                }
                self.metrics
                    .investigations_taken_up
                    .with_label_values(&["planned"])
                    .inc();
                tracing::info!(%incident, investigation = %id, "an investigation's proposals planned; each awaits a human");
            }
            Plan::Refused(refusal) => {
                self.metrics
                    .refusals
                    .with_label_values(&[refusal.code])
                    .inc();
                self.metrics
                    .investigations_taken_up
                    .with_label_values(&["refused"])
                    .inc();
                let reason = format!(
                    "{source}; refused ({}): {}; nothing ran, the incident stays with the humans it was escalated to",
                    refusal.code, refusal.reason
                );
                tracing::warn!(%incident, investigation = %id, %reason, "an investigation's proposal refused");
                self.record(
                    incident,
                    Decision::new(IncidentState::Refused, reason)
                        .action(refusal.action)
                        .caused_by(envelope)
                        .reopening(),
                )
                .await?;
            }
            // A root cause of `none` (nothing is wrong, yet something proposed): the incident
            // stays with the humans it was escalated to.
            Plan::NoAction(why) | Plan::Escalate(why) => {
                tracing::info!(%incident, investigation = %id, %why, "an investigation's report gave nothing to plan");
            }
        }
        Ok(())
    }
}
