//! The state machine driver: from where the ledger says an incident stands, the next step —
//! record the diagnosis, plan, propose or dry-run, start, finish, verify, roll back — until
//! the incident rests or must wait.

use super::*;
use crate::config::PolicyConfig;

impl Engine {
    /// Takes the incident as far as it can go now.
    pub(super) async fn advance(
        &self,
        incident: &str,
        diagnosis: Option<&Envelope<Diagnosis>>,
        progress: &mut Progress,
    ) -> Result<Step, HandlerError> {
        // Planning and starting a cluster-changing action is one critical section across
        // incidents (slots and rate limits); verification and everything after are not. An
        // incident an investigation took up acts on its report's plan, not the diagnosis'.
        let ledger = self.ledger(incident);
        let _admission = match ledger.state() {
            None
            | Some(
                IncidentState::Received | IncidentState::Planned | IncidentState::AwaitingApproval,
            ) if ledger.reopened()
                || diagnosis.is_none_or(|d| {
                    d.payload
                        .recommended_actions
                        .iter()
                        .any(|a| is_mutating(a.kind))
                }) =>
            {
                Some(self.admission.lock().await)
            }
            _ => None,
        };
        loop {
            let ledger = self.ledger(incident);
            if diagnosis.is_none() && ledger.entries.is_empty() {
                return Ok(Step::Rest);
            }
            match ledger.state() {
                None => {
                    let Some(d) = diagnosis else {
                        return Ok(Step::Rest);
                    };
                    let p = &d.payload;
                    let reason = format!(
                        "diagnosis {}: root cause {} (confidence {:.2}){}{}; {} proposal(s)",
                        d.id,
                        p.root_cause,
                        p.confidence,
                        p.target
                            .as_deref()
                            .map(|t| format!(", target {t}"))
                            .unwrap_or_default(),
                        p.runbook
                            .as_ref()
                            .map(|r| format!(
                                ", runbook {} v{} section {:?} (sha256 {})",
                                r.id, r.version, r.section, r.content_hash
                            ))
                            .unwrap_or_default(),
                        p.recommended_actions.len()
                    );
                    self.record(
                        incident,
                        Decision::new(IncidentState::Received, reason).caused_by(d),
                    )
                    .await?;
                }
                Some(IncidentState::Received) => {
                    let Some(d) = diagnosis else {
                        return Ok(Step::Rest);
                    };
                    if let Some(step) = self.plan(incident, d, &ledger).await? {
                        return Ok(step);
                    }
                }
                Some(IncidentState::Planned) => {
                    if let Some(step) = self.after_plan(incident, &ledger).await? {
                        return Ok(step);
                    }
                    if matches!(
                        self.ledger(incident).state(),
                        Some(IncidentState::AwaitingApproval | IncidentState::DryRun)
                    ) {
                        return Ok(Step::Rest);
                    }
                }
                Some(IncidentState::AwaitingApproval) => {
                    let approvals = ledger.approvals();
                    let waiting = ledger
                        .planned()
                        .iter()
                        .filter(|a| is_mutating(a.kind))
                        .any(|a| !approvals.contains_key(&a.idempotency_key));
                    if waiting {
                        return Ok(Step::Rest);
                    }
                    if let Some(step) = self.start_next(incident, &ledger).await? {
                        return Ok(step);
                    }
                }
                Some(IncidentState::Executing) => {
                    self.finish_action(incident, &ledger).await?;
                }
                Some(IncidentState::Verifying) => {
                    let applied = ledger.applied();
                    let pending = ledger.planned().into_iter().any(|a| {
                        is_mutating(a.kind)
                            && !applied
                                .iter()
                                .any(|d| d.idempotency_key == a.idempotency_key)
                    });
                    if pending {
                        if let Some(step) = self.start_next(incident, &ledger).await? {
                            return Ok(step);
                        }
                    } else if let Some(due) = self.verify(incident, &ledger, progress).await? {
                        return Ok(Step::CheckAt(due));
                    }
                }
                Some(IncidentState::RolledBack) => {
                    self.roll_back(incident, &ledger, None).await?;
                }
                Some(_) => return Ok(Step::Rest),
            }
        }
    }

    /// Plans the incident; `Some(Step::NoSlot)` when it must wait for an action slot.
    pub(super) async fn plan(
        &self,
        incident: &str,
        d: &Envelope<Diagnosis>,
        ledger: &IncidentLedger,
    ) -> Result<Option<Step>, HandlerError> {
        let decided = self.plan_for(
            incident,
            &d.cluster,
            &d.payload,
            &self.config.policy,
            &self.history(incident),
        );
        match decided {
            Plan::NoAction(reason) => {
                self.record(incident, Decision::new(IncidentState::NoAction, reason))
                    .await?
            }
            Plan::Escalate(reason) => {
                let target = d.payload.target.clone().unwrap_or_default();
                self.escalate(incident, &target, reason, Extra::default())
                    .await?
            }
            Plan::Refused(refusal) => {
                // A full house is not a policy verdict: the incident waits for a slot, up to
                // `queue_timeout` after it was received.
                let mut reason = format!("refused ({}): {}", refusal.code, refusal.reason);
                if refusal.code == SLOT_REFUSAL {
                    let waited = ledger
                        .entries
                        .first()
                        .map(|e| (Utc::now() - e.occurred_at).to_std().unwrap_or_default())
                        .unwrap_or_default();
                    if waited < self.config.policy.queue_timeout {
                        tracing::info!(%incident, reason = %refusal.reason, "waiting for a free action slot");
                        return Ok(Some(Step::NoSlot));
                    }
                    reason = format!(
                        "{reason}; no slot freed within policy.queue_timeout ({})",
                        humantime_serde::re::humantime::format_duration(
                            self.config.policy.queue_timeout
                        )
                    );
                }
                self.metrics
                    .refusals
                    .with_label_values(&[refusal.code])
                    .inc();
                self.record(
                    incident,
                    Decision::new(IncidentState::Refused, reason).action(refusal.action),
                )
                .await?
            }
            Plan::Act { actions, .. } => {
                for a in actions {
                    self.record(incident, planned(incident, a)).await?;
                }
            }
        }
        Ok(None)
    }

    /// What the plan says for `diagnosis`, given for `cluster`: refused when that is not the
    /// cluster this remediator acts on.
    pub(super) fn plan_for(
        &self,
        incident: &str,
        cluster: &str,
        diagnosis: &Diagnosis,
        policy: &PolicyConfig,
        history: &History,
    ) -> Plan {
        if cluster != self.home_cluster {
            return Plan::Refused(plan::Refusal {
                code: "wrong_cluster",
                reason: format!(
                    "the diagnosis is about cluster {cluster:?}, but this remediator acts on cluster {:?}",
                    self.home_cluster
                ),
                action: None,
            });
        }
        plan::plan(
            incident,
            diagnosis,
            &self.library,
            policy,
            history,
            Utc::now(),
        )
    }

    /// After planning: advice, dry runs, proposals, or the first action; `Some(Step::NoSlot)`
    /// when the first action must wait for a slot.
    pub(super) async fn after_plan(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
    ) -> Result<Option<Step>, HandlerError> {
        let planned = ledger.planned();
        let mutating: Vec<&ActionRecord> = planned.iter().filter(|a| is_mutating(a.kind)).collect();
        if mutating.is_empty() {
            let (state, action) = match planned.iter().find(|a| a.kind == ActionKind::Escalate) {
                Some(e) => (IncidentState::Escalated, e.clone()),
                None => (IncidentState::Advised, planned[0].clone()),
            };
            let outcome = if state == IncidentState::Advised {
                "advised"
            } else {
                "escalated"
            };
            self.metrics
                .actions
                .with_label_values(&[action.kind.into(), outcome])
                .inc();
            let reason = if state == IncidentState::Advised {
                format!(
                    "the fix for {} is handed to the developer; nothing changed in the cluster",
                    action.target
                )
            } else {
                format!(
                    "humans notified about {}; nothing changed in the cluster",
                    action.target
                )
            };
            return self
                .record(incident, Decision::new(state, reason).action(Some(action)))
                .await
                .map(|()| None);
        }
        let mode = mutating[0].mode;
        match mode {
            ActionMode::Auto => self.start_next(incident, ledger).await,
            ActionMode::DryRun | ActionMode::Approve => {
                for a in mutating {
                    let dry = self.cluster.execute(a, incident, true).await;
                    let (effect, saving) = projection(ledger, &a.idempotency_key);
                    match dry {
                        Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
                        Err(ActError::Refused(e)) => {
                            self.metrics
                                .actions
                                .with_label_values(&[a.kind.into(), "failed"])
                                .inc();
                            return self.record(incident, Decision::new(IncidentState::Escalated, format!("the server-side dry run of {} on {} was rejected: {e}; humans notified", a.kind, a.target)).action(Some(escalate_record(incident, &a.target, mode))))
                                .await
                                .map(|()| None);
                        }
                        Ok(detail) if mode == ActionMode::DryRun => {
                            self.metrics
                                .actions
                                .with_label_values(&[a.kind.into(), "dry_run"])
                                .inc();
                            self.record(
                                incident,
                                Decision::new(
                                    IncidentState::DryRun,
                                    format!("dry-run mode: {detail}; nothing applied"),
                                )
                                .action(Some(a.clone()))
                                .extra(Extra {
                                    projected_effect: effect,
                                    projected_saving_usd: saving,
                                    verification: None,
                                }),
                            )
                            .await?;
                        }
                        Ok(detail) => {
                            self.metrics
                                .actions
                                .with_label_values(&[a.kind.into(), "proposed"])
                                .inc();
                            let expires = Utc::now()
                                + chrono::Duration::from_std(self.config.approvals.expiry)
                                    .unwrap_or(chrono::Duration::MAX);
                            let origin = crate::investigation::origin(ledger)
                                .map(|o| format!("; {o}: {}", crate::investigation::HUMAN_APPROVES))
                                .unwrap_or_default();
                            self.record(incident, Decision::new(IncidentState::AwaitingApproval, format!(
                                        "proposal: approve on opsmesh.approvals.v1 with idempotency_key {:?} before {}; {detail}{origin}",
                                        a.idempotency_key,
                                        expires.to_rfc3339()
                                    )).action(Some(a.clone())).extra(Extra {
                                        projected_effect: effect,
                                        projected_saving_usd: saving,
                                        verification: None,
                                    }))
                                .await?;
                        }
                    }
                }
                Ok(None)
            }
        }
    }
}

/// The `planned` record of an action that passed every check.
pub(super) fn planned(incident: &str, a: plan::PlannedAction) -> Decision {
    if let Some(why) = &a.downgraded {
        tracing::warn!(%incident, action = %a.record.kind, reason = %why, "auto mode downgraded: the action waits for an approval");
    }
    Decision::new(IncidentState::Planned, a.reason)
        .action(Some(a.record))
        .extra(Extra {
            projected_effect: Some(a.projected_effect),
            projected_saving_usd: a.projected_saving_usd,
            verification: None,
        })
}

/// The projection recorded when `key` was planned.
fn projection(ledger: &IncidentLedger, key: &str) -> (Option<String>, Option<f64>) {
    ledger
        .entries
        .iter()
        .find(|e| {
            e.record.state == IncidentState::Planned
                && e.record
                    .action
                    .as_ref()
                    .is_some_and(|a| a.idempotency_key == key)
        })
        .map(|e| {
            (
                e.record.projected_effect.clone(),
                e.record.projected_saving_usd,
            )
        })
        .unwrap_or_default()
}
