//! Action execution: the intent of the next action (after its guards and the policy pass again
//! on the cluster as it is now), carrying it out exactly once, health checks, the verdict, and
//! putting changes back when they did not help.

use super::*;
use crate::plan::ladder::{READY_BEFORE, Rung, step_of};

impl Engine {
    /// Records the intent of the next planned action, after its guards and the policy passed
    /// again on what the cluster shows now, and its server-side dry run. `Some(Step::NoSlot)`
    /// when it must wait for a free action slot.
    pub(super) async fn start_next(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
    ) -> Result<Option<Step>, HandlerError> {
        let applied = ledger.applied();
        let approvals = ledger.approvals();
        let Some(mut next) = ledger.planned().into_iter().find(|a| {
            is_mutating(a.kind)
                && !applied
                    .iter()
                    .any(|d| d.idempotency_key == a.idempotency_key)
        }) else {
            return Ok(None);
        };
        next.approved_by = approvals.get(&next.idempotency_key).cloned();
        if Rung::of(&next).is_some() {
            // The first step of a ladder: how it stands now, to tell later whether it helped.
            match self.cluster.check(&next).await {
                Ok(h) => {
                    if let Some(ready) = h.ready_containers {
                        next.params.insert(READY_BEFORE.into(), ready.into());
                    }
                }
                Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
                Err(ActError::Refused(_)) => {}
            }
        }
        self.begin(incident, ledger, next, None).await
    }

    /// Records the intent of `next` once its guards and the policy passed again on what the
    /// cluster shows now and its server-side dry run passed; `after` says what led to it (a
    /// failed step of a ladder, with its verification). `Some(Step::NoSlot)` when it must
    /// wait for a free action slot.
    pub(super) async fn begin(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        mut next: ActionRecord,
        after: Option<(String, Verification)>,
    ) -> Result<Option<Step>, HandlerError> {
        if next.kind == ActionKind::RestartInferenceService {
            next.params.insert(
                "restarted_at".into(),
                serde_json::json!(Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
        }
        let observed = match self.cluster.observe(&next).await {
            Ok(o) => o,
            Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
            Err(ActError::Refused(e)) => {
                return self.fail(incident, &next, &e).await.map(|()| None);
            }
        };
        next.params.extend(observed);
        match self.admit(incident, ledger, &next).await? {
            Admission::Run => {}
            Admission::Wait => return Ok(Some(Step::NoSlot)),
            Admission::Refused => return Ok(None),
        }
        let detail = match self.cluster.execute(&next, incident, true).await {
            Ok(d) => d,
            Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
            Err(ActError::Refused(e)) => {
                return self
                    .fail(
                        incident,
                        &next,
                        &format!("server-side dry run rejected: {e}"),
                    )
                    .await
                    .map(|()| None);
            }
        };
        let who = next
            .approved_by
            .as_deref()
            .map(|a| format!(" approved by {a};"))
            .unwrap_or_default();
        let (why, verification) = match after {
            Some((why, v)) => (format!("{why}; "), Some(v)),
            None => (String::new(), None),
        };
        self.record(incident, Decision::new(IncidentState::Executing, format!(
                    "{why}intent: {} on {} ({});{who} guards and policy passed again on the cluster as it is now; server-side {detail}; applying with field manager {}",
                    next.kind, next.target, next.idempotency_key, self.config.field_manager
                )).action(Some(next.clone())).extra(Extra { verification, ..Extra::default() }))
            .await
            .map(|()| None)
    }

    /// Carries out the action whose intent is the last record — unless the target shows it was
    /// already done (a replica died between the call and the result).
    pub(super) async fn finish_action(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
    ) -> Result<(), HandlerError> {
        let action = ledger
            .entries
            .last()
            .and_then(|e| e.record.action.clone())
            .ok_or_else(|| HandlerError::Permanent("executing record without action".into()))?;
        let done = match self.cluster.is_done(&action, incident).await {
            Ok(d) => d,
            Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
            Err(ActError::Refused(e)) => return self.fail(incident, &action, &e).await,
        };
        let detail = if done {
            self.metrics
                .actions
                .with_label_values(&[action.kind.into(), "already_done"])
                .inc();
            format!(
                "{} on {}: the target is already in the wanted state; not applied again",
                action.kind, action.target
            )
        } else {
            match self.cluster.execute(&action, incident, false).await {
                Ok(d) => {
                    self.metrics
                        .actions
                        .with_label_values(&[action.kind.into(), "executed"])
                        .inc();
                    d
                }
                Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
                Err(ActError::Refused(e)) => {
                    return self.fail(incident, &action, &e).await;
                }
            }
        };
        self.record(
            incident,
            Decision::new(IncidentState::Verifying, detail).action(Some(action)),
        )
        .await
    }

    pub(super) async fn fail(
        &self,
        incident: &str,
        action: &ActionRecord,
        error: &str,
    ) -> Result<(), HandlerError> {
        self.metrics
            .actions
            .with_label_values(&[action.kind.into(), "failed"])
            .inc();
        let ledger = self.ledger(incident);
        if ledger.state() == Some(IncidentState::Verifying) && !ledger.applied().is_empty() {
            // Earlier actions of the plan ran: put them back before telling humans.
            return self
                .roll_back(
                    incident,
                    &ledger,
                    Some(format!(
                        "{} on {} failed: {error}",
                        action.kind, action.target
                    )),
                )
                .await;
        }
        self.record(
            incident,
            Decision::new(
                IncidentState::Escalated,
                format!(
                    "{} on {} failed: {error}; humans notified",
                    action.kind, action.target
                ),
            )
            .action(Some(escalate_record(incident, &action.target, action.mode))),
        )
        .await
    }

    /// One health check of everything the plan changed, when it is due. Check `k` (1-based)
    /// is due `k` × `verification.interval` after the incident started verifying, whichever
    /// replica makes it: a replica that resumes an incident after a restart continues with the
    /// remaining checks. Returns when the next check is due, or `None` once a verdict is
    /// recorded (resolved, or rolled back and escalated). A check that cannot reach the
    /// cluster does not count: it is retried with backoff.
    pub(super) async fn verify(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        progress: &mut Progress,
    ) -> Result<Option<Instant>, HandlerError> {
        let cfg = &self.config.verification;
        let since = ledger
            .entries
            .last()
            .map_or_else(Utc::now, |e| e.occurred_at);
        let elapsed = (Utc::now() - since).to_std().unwrap_or_default();
        let done = *progress.checks_done.get_or_insert_with(|| {
            // Resumed: the checks whose time passed while nobody verified are not made up,
            // but the last one always runs.
            let passed = elapsed.as_nanos() / cfg.interval.as_nanos().max(1);
            (passed.min(u128::from(cfg.attempts)) as u32).saturating_sub(1)
        });
        let due_after = cfg.interval * (done + 1);
        if elapsed < due_after {
            return Ok(Some(Instant::now() + (due_after - elapsed)));
        }
        // The actions of the step being verified (a ladder's earlier steps already failed).
        let applied = ledger.applied();
        let step = applied.iter().map(step_of).max().unwrap_or(1);
        let current: Vec<ActionRecord> =
            applied.into_iter().filter(|a| step_of(a) == step).collect();
        let mut healthy = true;
        let mut details = Vec::new();
        let mut ready_after: Option<u64> = None;
        for a in &current {
            match self.cluster.check(a).await {
                Ok(h) => {
                    healthy &= h.healthy;
                    details.push(h.detail);
                    ready_after = match (ready_after, h.ready_containers) {
                        (Some(r), Some(n)) => Some(r.min(n)),
                        (r, n) => r.or(n),
                    };
                }
                Err(ActError::Transient(e)) => {
                    return Err(HandlerError::Transient(format!(
                        "health check of {}: {e}",
                        a.target
                    )));
                }
                Err(ActError::Refused(e)) => {
                    healthy = false;
                    details.push(format!("{}: {e}", a.target));
                }
            }
        }
        let attempts = done + 1;
        progress.checks_done = Some(attempts);
        let last = details.join("; ");
        if !healthy && attempts < cfg.attempts {
            tracing::info!(%incident, attempt = attempts, detail = %last, "not healthy yet");
            let next = cfg.interval * (attempts + 1);
            return Ok(Some(Instant::now() + next.saturating_sub(elapsed)));
        }
        let result = if healthy { "healthy" } else { "unhealthy" };
        self.metrics
            .verification_seconds
            .with_label_values(&[result])
            .observe(elapsed.as_secs_f64());
        let verification = Verification {
            attempts,
            healthy,
            detail: last.clone(),
        };
        // Whatever comes next (a verdict, or a ladder's next step) is checked afresh.
        progress.checks_done = None;
        self.conclude(incident, ledger, &current, verification, ready_after)
            .await
            .map(|()| None)
    }

    /// Records the verdict of the health checks of `current` (the step just verified), and on
    /// failure what follows: the ladder's next step, or rollback and escalation.
    pub(super) async fn conclude(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        current: &[ActionRecord],
        verification: Verification,
        ready_after: Option<u64>,
    ) -> Result<(), HandlerError> {
        let (healthy, attempts) = (verification.healthy, verification.attempts);
        let last = verification.detail.clone();
        if healthy {
            if let Some(escalate) = ledger
                .planned()
                .into_iter()
                .find(|a| a.kind == ActionKind::Escalate)
            {
                self.metrics
                    .actions
                    .with_label_values(&["escalate", "escalated"])
                    .inc();
                return self.record(incident, Decision::new(IncidentState::Escalated, format!("verified healthy after {attempts} check(s) ({last}); humans told too, as the runbook section requires")).action(Some(escalate)).extra(Extra { verification: Some(verification), ..Extra::default() }))
                    .await;
            }
            return self
                .record(
                    incident,
                    Decision::new(
                        IncidentState::Resolved,
                        format!("verified healthy after {attempts} check(s): {last}"),
                    )
                    .extra(Extra {
                        verification: Some(verification),
                        ..Extra::default()
                    }),
                )
                .await;
        }
        let why = format!("verification failed after {attempts} check(s): {last}");
        match current.iter().rev().find(|a| Rung::of(a).is_some()) {
            Some(laddered) => {
                self.climb(incident, ledger, laddered, verification, why, ready_after)
                    .await
            }
            None => self.give_up(incident, ledger, verification, why).await,
        }
    }

    /// Rolls back every invertible change the incident made (all its steps) and escalates, or
    /// escalates alone when nothing can be undone.
    pub(super) async fn give_up(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        verification: Verification,
        why: String,
    ) -> Result<(), HandlerError> {
        let applied = ledger.applied();
        if applied.iter().any(|a| is_invertible(a.kind)) {
            self.roll_back_with(incident, ledger, why, Some(verification))
                .await
        } else {
            let target = applied.last().map(|a| a.target.clone()).unwrap_or_default();
            self.escalate(
                incident,
                &target,
                format!("{why}; nothing to undo (the actions changed no spec); humans notified"),
                Extra {
                    verification: Some(verification),
                    ..Extra::default()
                },
            )
            .await
        }
    }

    pub(super) async fn roll_back(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        why: Option<String>,
    ) -> Result<(), HandlerError> {
        let why = why.unwrap_or_else(|| "continuing the rollback".into());
        self.roll_back_with(incident, ledger, why, None).await
    }

    /// Undoes the applied invertible actions, newest first (one record each), then escalates.
    pub(super) async fn roll_back_with(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        why: String,
        verification: Option<Verification>,
    ) -> Result<(), HandlerError> {
        let mut pending: Vec<ActionRecord> = ledger
            .applied()
            .into_iter()
            .filter(|a| is_invertible(a.kind) && !ledger.rolled_back(&a.idempotency_key))
            .collect();
        pending.reverse();
        let mut verification = verification;
        let mut failures = Vec::new();
        for a in pending {
            match self.cluster.undo(&a).await {
                Ok(detail) => {
                    self.metrics
                        .actions
                        .with_label_values(&[a.kind.into(), "rolled_back"])
                        .inc();
                    self.record(
                        incident,
                        Decision::new(
                            IncidentState::RolledBack,
                            format!("{why}; rolled back: {detail}"),
                        )
                        .action(Some(a.clone()))
                        .extra(Extra {
                            verification: verification.take(),
                            ..Extra::default()
                        }),
                    )
                    .await?;
                }
                Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
                Err(ActError::Refused(e)) => {
                    failures.push(format!("undoing {} failed: {e}", a.kind))
                }
            }
        }
        let ledger = self.ledger(incident);
        let target = ledger
            .applied()
            .last()
            .map(|a| a.target.clone())
            .unwrap_or_default();
        let reason = if failures.is_empty() {
            format!("{why}; the changes were undone; humans notified")
        } else {
            format!("{why}; {}; humans notified", failures.join("; "))
        };
        self.escalate(
            incident,
            &target,
            reason,
            Extra {
                verification,
                ..Extra::default()
            },
        )
        .await
    }
}

pub(super) fn escalate_record(incident: &str, target: &str, mode: ActionMode) -> ActionRecord {
    ActionRecord {
        kind: ActionKind::Escalate,
        target: target.to_owned(),
        params: Default::default(),
        idempotency_key: idempotency_key(incident, ActionKind::Escalate, target),
        mode,
        approved_by: None,
    }
}
