//! The remediation engine: one resumable procedure per incident. Each step reads where the
//! incident stands in the ledger, does one thing and records it (through the state machine)
//! before the next; so a replica that takes over after a crash continues from the last
//! record, and an action whose intent was recorded but whose result was not is resolved by
//! looking at the target, never by running it blindly again.
//!
//! Nothing waits inside a consumer handler: an incident that must wait (for its next health
//! check, a free action slot, a dependency to come back) goes on the [`Agenda`], and the
//! message that brought it stays uncommitted until the incident comes to rest. Many
//! incidents are verified at once; one incident takes one step at a time.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use serde::Serialize;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState,
    approval::{Approval, ApprovalDecision},
    diagnosis::Diagnosis,
    ledger::{ChainHead, LedgerLink},
    remediation::{ActionMode, ActionRecord, Remediation, Verification},
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{
    HandlerError, Publisher,
    bus::{Pending, defer},
    keyed_lock::KeyedLocks,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    agenda::{Agenda, Task, Waiting},
    cluster::{ActError, Cluster},
    config::RemediatorConfig,
    engine::admission::Admission,
    keys::Keys,
    ledger::{self, IncidentLedger, LedgerView, is_invertible, is_mutating},
    metrics::Metrics,
    plan::{self, History, Plan, idempotency_key},
    policy::SLOT_REFUSAL,
    state::transition,
};

pub const SOURCE: &str = "opsmesh-remediator";

/// How the reason of a refused (unsigned, mis-signed) approval's record begins.
const REFUSED_APPROVAL: &str = "refused an approval";
/// Refused approvals recorded per incident; later ones are only logged and counted.
const MAX_RECORDED_REFUSALS: usize = 3;

mod admission;
mod background;
mod heads;

pub struct Engine {
    pub config: RemediatorConfig,
    /// The cluster this remediator acts on (the top-level `cluster` setting): diagnoses about
    /// any other are refused.
    pub home_cluster: String,
    pub library: Library,
    pub cluster: Cluster,
    pub view: Arc<Mutex<LedgerView>>,
    pub metrics: Metrics,
    publisher: Publisher,
    /// One step of an incident at a time in this replica (consumer, agenda, sweeper).
    locks: KeyedLocks,
    /// Held from planning a cluster-changing action until its intent is recorded, so two
    /// incidents cannot both take the last action slot or rate-limit budget.
    admission: tokio::sync::Mutex<()>,
    agenda: Agenda,
    keys: Keys,
    /// Where the chains this replica wrote to end, since heads were last published.
    heads: Mutex<BTreeMap<String, ChainHead>>,
}

/// Where an incident stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Terminal, or waiting for a human: nothing to drive.
    Rest,
    /// The next health check is due then.
    CheckAt(Instant),
    /// Every action slot is taken; planning is retried when one frees.
    NoSlot,
}

/// What a step may carry over to the next: health checks done so far in this replica.
#[derive(Default)]
struct Progress {
    checks_done: Option<u32>,
}

/// Optional parts of a record.
#[derive(Default)]
struct Extra {
    projected_effect: Option<String>,
    projected_saving_usd: Option<f64>,
    verification: Option<Verification>,
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

impl Engine {
    pub fn new(
        config: RemediatorConfig,
        home_cluster: String,
        library: Library,
        cluster: Cluster,
        publisher: Publisher,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            home_cluster,
            library,
            cluster,
            view: Arc::new(Mutex::new(LedgerView::default())),
            metrics,
            publisher,
            locks: KeyedLocks::default(),
            admission: tokio::sync::Mutex::new(()),
            agenda: Agenda::default(),
            keys: Keys::default(),
            heads: Mutex::default(),
        }
    }

    /// The keys ledger records are signed and approvals checked with.
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    fn ledger(&self, incident: &str) -> IncidentLedger {
        self.view
            .lock()
            .expect("ledger view lock")
            .incident(incident)
            .cloned()
            .unwrap_or_default()
    }

    /// Applies a record read from `opsmesh.remediations.v1` to the view.
    pub fn observe(&self, envelope: &Envelope<Remediation>) {
        let mut view = self.view.lock().expect("ledger view lock");
        view.apply(envelope);
        self.metrics
            .approvals_pending
            .set(view.awaiting_approval() as i64);
        // Executing and verifying take a slot; anything after frees it.
        let state = envelope.payload.state;
        if state.is_terminal() || state == IncidentState::RolledBack {
            self.agenda.slot_freed();
        }
    }

    /// Seals the next record of `incident` (checking the transition), publishes it and adds it
    /// to the view.
    async fn record<Q: Serialize>(
        &self,
        parent: &Envelope<Q>,
        incident: &str,
        state: IncidentState,
        action: Option<ActionRecord>,
        reason: String,
        extra: Extra,
    ) -> Result<(), HandlerError> {
        let ledger = self.ledger(incident);
        transition(ledger.state(), state).map_err(|e| {
            tracing::error!(%incident, error = %e, "refusing to record an illegal transition");
            HandlerError::Permanent(format!("incident {incident}: {e}"))
        })?;
        let diagnosis_id = ledger.diagnosis_id().unwrap_or_else(|| parent_id(parent));
        let seq = ledger.next_seq();
        let record = Remediation {
            diagnosis_id,
            state,
            action,
            reason,
            projected_effect: extra.projected_effect,
            projected_saving_usd: extra.projected_saving_usd,
            verification: extra.verification,
            ledger: LedgerLink::default(),
        };
        let mut envelope = derive(parent, &format!("{incident}:{seq}"), record);
        envelope.incident_id = Some(incident.to_owned());
        ledger::seal(
            &mut envelope,
            seq,
            ledger.last_hash(),
            self.keys.ledger.as_ref(),
        );
        self.publisher
            .publish(incident, &envelope)
            .await
            .map_err(transient)?;
        self.observe(&envelope);
        self.wrote_head(incident, seq, &envelope.payload.ledger.hash);
        self.metrics
            .records
            .with_label_values(&[<&str>::from(state)])
            .inc();
        tracing::info!(%incident, seq, %state, reason = %envelope.payload.reason, "ledger record");
        Ok(())
    }

    /// How far back the policy looks at other incidents' actions (rate window, cooldown).
    fn lookback(&self) -> chrono::Duration {
        let policy = &self.config.policy;
        chrono::Duration::from_std(policy.rate_limit.window.max(policy.cooldown))
            .unwrap_or(chrono::Duration::MAX)
    }

    fn history(&self, incident: &str) -> History {
        let view = self.view.lock().expect("ledger view lock");
        let since = Utc::now()
            .checked_sub_signed(self.lookback())
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let recent = view.executions_since(since, incident);
        History {
            in_flight: view.in_flight(incident),
            recent,
        }
    }

    /// A diagnosis: start (or resume) its incident. `Some` when the incident continues in the
    /// background: the diagnosis counts as handled once it comes to rest.
    pub async fn on_diagnosis(
        &self,
        envelope: &Envelope<Diagnosis>,
    ) -> Result<Option<Pending>, HandlerError> {
        let incident = envelope
            .incident_id
            .clone()
            .unwrap_or_else(|| envelope.payload.fingerprint.clone());
        let _guard = self.locks.lock(&incident).await;
        let ledger = self.ledger(&incident);
        if let Some(state) = ledger.state()
            && ledger.diagnosis_id() != Some(envelope.id)
        {
            tracing::info!(%incident, %state, diagnosis = %envelope.id, "incident already has a decision; later diagnosis ignored");
            return Ok(None);
        }
        if let Some(state) = ledger.state().filter(|s| s.is_terminal()) {
            // At-least-once delivery: the offset was not committed before a crash or rebalance.
            tracing::info!(%incident, %state, diagnosis = %envelope.id, "diagnosis delivered again; the incident is already decided, nothing repeated");
            return Ok(None);
        }
        if let Some(state) = ledger.state() {
            // A crash or rebalance before the incident came to rest: take it up where the
            // ledger says it stopped.
            tracing::info!(%incident, %state, diagnosis = %envelope.id, "diagnosis delivered again; resuming the incident from its ledger");
        }
        let mut progress = Progress::default();
        let step = self.advance(&incident, Some(envelope), &mut progress).await;
        if let Err(HandlerError::Permanent(e)) = step {
            // The diagnosis itself cannot be worked (an illegal transition): its DLQ.
            return Err(HandlerError::Permanent(e));
        }
        Ok(self.follow_up(
            &incident,
            Task::new(Some(envelope.clone())),
            progress,
            step,
            true,
        ))
    }

    /// An approval or rejection of a proposal.
    pub async fn on_approval(
        &self,
        envelope: &Envelope<Approval>,
    ) -> Result<Option<Pending>, HandlerError> {
        let incident = approval_incident(envelope);
        let _guard = self.locks.lock(&incident).await;
        let mut progress = Progress::default();
        let step = match self.decide(&incident, envelope).await {
            Ok(true) => self.advance(&incident, None, &mut progress).await,
            Ok(false) => self.resume_state(&incident),
            Err(e) => Err(e),
        };
        Ok(self.follow_up(&incident, Task::new(None), progress, step, true))
    }

    /// Where an incident stands without doing anything: an incident in the middle of its
    /// work (a redelivered message after a crash) is driven again from its ledger.
    fn resume_state(&self, incident: &str) -> Result<Step, HandlerError> {
        Ok(match self.ledger(incident).state() {
            Some(
                IncidentState::Executing | IncidentState::Verifying | IncidentState::RolledBack,
            ) if !self.agenda.holds(incident) => Step::CheckAt(Instant::now()),
            _ => Step::Rest,
        })
    }

    /// Records the decision on a proposal; `true` when the incident may go on.
    async fn decide(
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
                    envelope,
                    &incident,
                    IncidentState::Refused,
                    Some(proposal.clone()),
                    format!(
                        "{} on {} rejected by {approver}{comment} (approval {})",
                        proposal.kind, proposal.target, envelope.id
                    ),
                    Extra::default(),
                )
                .await
                .map(|()| false)
            }
            ApprovalDecision::Approve => {
                let mut approved = proposal.clone();
                approved.approved_by = Some(approver.to_owned());
                self.record(
                    envelope,
                    &incident,
                    IncidentState::AwaitingApproval,
                    Some(approved),
                    format!(
                        "{} on {} approved by {approver}{comment} (approval {})",
                        proposal.kind, proposal.target, envelope.id
                    ),
                    Extra::default(),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Records that an approval was not believed (the proposal keeps waiting for one that
    /// is); after [`MAX_RECORDED_REFUSALS`] such records per incident, only logs and counts,
    /// so whoever floods the topic with forged approvals cannot grow the ledger.
    async fn refuse_approval(
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
        self.record(
            envelope,
            &incident,
            IncidentState::AwaitingApproval,
            Some(proposal.clone()),
            format!(
                "{REFUSED_APPROVAL} by {approver:?} (approval {}): {why}; {} on {} still awaits a signed decision",
                envelope.id, proposal.kind, proposal.target
            ),
            Extra::default(),
        )
        .await
    }

    /// Takes the incident as far as it can go now.
    async fn advance(
        &self,
        incident: &str,
        diagnosis: Option<&Envelope<Diagnosis>>,
        progress: &mut Progress,
    ) -> Result<Step, HandlerError> {
        // Planning and starting a cluster-changing action is one critical section across
        // incidents (slots and rate limits); verification and everything after are not.
        let _admission = match self.ledger(incident).state() {
            None
            | Some(
                IncidentState::Received | IncidentState::Planned | IncidentState::AwaitingApproval,
            ) if diagnosis.is_none_or(|d| {
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
            let parent = match (diagnosis, ledger.entries.last()) {
                (_, Some(last)) => Parent::Record(last.envelope.clone()),
                (Some(d), None) => Parent::Diagnosis(d.clone()),
                (None, None) => return Ok(Step::Rest),
            };
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
                    parent
                        .record(
                            self,
                            incident,
                            IncidentState::Received,
                            None,
                            reason,
                            Extra::default(),
                        )
                        .await?;
                }
                Some(IncidentState::Received) => {
                    let Some(d) = diagnosis else {
                        return Ok(Step::Rest);
                    };
                    if let Some(step) = self.plan(incident, d, &ledger, &parent).await? {
                        return Ok(step);
                    }
                }
                Some(IncidentState::Planned) => {
                    if let Some(step) = self.after_plan(incident, &ledger, &parent).await? {
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
                    if let Some(step) = self.start_next(incident, &ledger, &parent).await? {
                        return Ok(step);
                    }
                }
                Some(IncidentState::Executing) => {
                    self.finish_action(incident, &ledger, &parent).await?;
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
                        if let Some(step) = self.start_next(incident, &ledger, &parent).await? {
                            return Ok(step);
                        }
                    } else if let Some(due) =
                        self.verify(incident, &ledger, &parent, progress).await?
                    {
                        return Ok(Step::CheckAt(due));
                    }
                }
                Some(IncidentState::RolledBack) => {
                    self.roll_back(incident, &ledger, &parent, None).await?;
                }
                Some(_) => return Ok(Step::Rest),
            }
        }
    }

    /// Plans the incident; `Some(Step::NoSlot)` when it must wait for an action slot.
    async fn plan(
        &self,
        incident: &str,
        d: &Envelope<Diagnosis>,
        ledger: &IncidentLedger,
        parent: &Parent,
    ) -> Result<Option<Step>, HandlerError> {
        let decided = if d.cluster != self.home_cluster {
            Plan::Refused(plan::Refusal {
                code: "wrong_cluster",
                reason: format!(
                    "the diagnosis is about cluster {:?}, but this remediator acts on cluster {:?}",
                    d.cluster, self.home_cluster
                ),
                action: None,
            })
        } else {
            plan::plan(
                incident,
                &d.payload,
                &self.library,
                &self.config.policy,
                &self.history(incident),
                Utc::now(),
            )
        };
        match decided {
            Plan::NoAction(reason) => {
                parent
                    .record(
                        self,
                        incident,
                        IncidentState::NoAction,
                        None,
                        reason,
                        Extra::default(),
                    )
                    .await?
            }
            Plan::Escalate(reason) => {
                let target = d.payload.target.clone().unwrap_or_default();
                parent
                    .escalate(self, incident, &target, reason, Extra::default())
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
                parent
                    .record(
                        self,
                        incident,
                        IncidentState::Refused,
                        refusal.action,
                        reason,
                        Extra::default(),
                    )
                    .await?
            }
            Plan::Act { actions, .. } => {
                for a in actions {
                    if let Some(why) = &a.downgraded {
                        tracing::warn!(%incident, action = %a.record.kind, reason = %why, "auto mode downgraded: the action waits for an approval");
                    }
                    let last = self.ledger(incident);
                    let parent = Parent::Record(
                        last.entries
                            .last()
                            .map(|e| e.envelope.clone())
                            .expect("the received record exists"),
                    );
                    parent
                        .record(
                            self,
                            incident,
                            IncidentState::Planned,
                            Some(a.record),
                            a.reason,
                            Extra {
                                projected_effect: Some(a.projected_effect),
                                projected_saving_usd: a.projected_saving_usd,
                                verification: None,
                            },
                        )
                        .await?;
                }
            }
        }
        Ok(None)
    }

    /// After planning: advice, dry runs, proposals, or the first action; `Some(Step::NoSlot)`
    /// when the first action must wait for a slot.
    async fn after_plan(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        parent: &Parent,
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
            return parent
                .record(
                    self,
                    incident,
                    state,
                    Some(action),
                    reason,
                    Extra::default(),
                )
                .await
                .map(|()| None);
        }
        let mode = mutating[0].mode;
        match mode {
            ActionMode::Auto => self.start_next(incident, ledger, parent).await,
            ActionMode::DryRun | ActionMode::Approve => {
                for a in mutating {
                    let last = self.ledger(incident);
                    let parent =
                        Parent::Record(last.entries.last().expect("planned").envelope.clone());
                    let dry = self.cluster.execute(a, incident, true).await;
                    let (effect, saving) = projection(ledger, &a.idempotency_key);
                    match dry {
                        Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
                        Err(ActError::Refused(e)) => {
                            self.metrics
                                .actions
                                .with_label_values(&[a.kind.into(), "failed"])
                                .inc();
                            return parent
                                .record(
                                    self,
                                    incident,
                                    IncidentState::Escalated,
                                    Some(escalate_record(incident, &a.target, mode)),
                                    format!("the server-side dry run of {} on {} was rejected: {e}; humans notified", a.kind, a.target),
                                    Extra::default(),
                                )
                                .await
                                .map(|()| None);
                        }
                        Ok(detail) if mode == ActionMode::DryRun => {
                            self.metrics
                                .actions
                                .with_label_values(&[a.kind.into(), "dry_run"])
                                .inc();
                            parent
                                .record(
                                    self,
                                    incident,
                                    IncidentState::DryRun,
                                    Some(a.clone()),
                                    format!("dry-run mode: {detail}; nothing applied"),
                                    Extra {
                                        projected_effect: effect,
                                        projected_saving_usd: saving,
                                        verification: None,
                                    },
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
                            parent
                                .record(
                                    self,
                                    incident,
                                    IncidentState::AwaitingApproval,
                                    Some(a.clone()),
                                    format!(
                                        "proposal: approve on opsmesh.approvals.v1 with idempotency_key {:?} before {}; {detail}",
                                        a.idempotency_key,
                                        expires.to_rfc3339()
                                    ),
                                    Extra {
                                        projected_effect: effect,
                                        projected_saving_usd: saving,
                                        verification: None,
                                    },
                                )
                                .await?;
                        }
                    }
                }
                Ok(None)
            }
        }
    }

    /// Records the intent of the next planned action, after its guards and the policy passed
    /// again on what the cluster shows now, and its server-side dry run. `Some(Step::NoSlot)`
    /// when it must wait for a free action slot.
    async fn start_next(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        parent: &Parent,
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
                return self.fail(incident, parent, &next, &e).await.map(|()| None);
            }
        };
        next.params.extend(observed);
        match self.admit(incident, ledger, parent, &next).await? {
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
                        parent,
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
        parent
            .record(
                self,
                incident,
                IncidentState::Executing,
                Some(next.clone()),
                format!(
                    "intent: {} on {} ({});{who} guards and policy passed again on the cluster as it is now; server-side {detail}; applying with field manager {}",
                    next.kind, next.target, next.idempotency_key, self.config.field_manager
                ),
                Extra::default(),
            )
            .await
            .map(|()| None)
    }

    /// Carries out the action whose intent is the last record — unless the target shows it was
    /// already done (a replica died between the call and the result).
    async fn finish_action(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        parent: &Parent,
    ) -> Result<(), HandlerError> {
        let action = ledger
            .entries
            .last()
            .and_then(|e| e.record.action.clone())
            .ok_or_else(|| HandlerError::Permanent("executing record without action".into()))?;
        let done = match self.cluster.is_done(&action, incident).await {
            Ok(d) => d,
            Err(ActError::Transient(e)) => return Err(HandlerError::Transient(e)),
            Err(ActError::Refused(e)) => return self.fail(incident, parent, &action, &e).await,
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
                    return self.fail(incident, parent, &action, &e).await;
                }
            }
        };
        parent
            .record(
                self,
                incident,
                IncidentState::Verifying,
                Some(action),
                detail,
                Extra::default(),
            )
            .await
    }

    async fn fail(
        &self,
        incident: &str,
        parent: &Parent,
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
                    parent,
                    Some(format!(
                        "{} on {} failed: {error}",
                        action.kind, action.target
                    )),
                )
                .await;
        }
        parent
            .record(
                self,
                incident,
                IncidentState::Escalated,
                Some(escalate_record(incident, &action.target, action.mode)),
                format!(
                    "{} on {} failed: {error}; humans notified",
                    action.kind, action.target
                ),
                Extra::default(),
            )
            .await
    }

    /// One health check of everything the plan changed, when it is due. Check `k` (1-based)
    /// is due `k` × `verification.interval` after the incident started verifying, whichever
    /// replica makes it: a replica that resumes an incident after a restart continues with the
    /// remaining checks. Returns when the next check is due, or `None` once a verdict is
    /// recorded (resolved, or rolled back and escalated). A check that cannot reach the
    /// cluster does not count: it is retried with backoff.
    async fn verify(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        parent: &Parent,
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
        let applied = ledger.applied();
        let mut healthy = true;
        let mut details = Vec::new();
        for a in &applied {
            match self.cluster.check(a).await {
                Ok(h) => {
                    healthy &= h.healthy;
                    details.push(h.detail);
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
        self.conclude(incident, ledger, parent, &applied, verification, last)
            .await
            .map(|()| None)
    }

    /// Records the verdict of the health checks.
    async fn conclude(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        parent: &Parent,
        applied: &[ActionRecord],
        verification: Verification,
        last: String,
    ) -> Result<(), HandlerError> {
        let (healthy, attempts) = (verification.healthy, verification.attempts);
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
                return parent
                    .record(
                        self,
                        incident,
                        IncidentState::Escalated,
                        Some(escalate),
                        format!("verified healthy after {attempts} check(s) ({last}); humans told too, as the runbook section requires"),
                        Extra { verification: Some(verification), ..Extra::default() },
                    )
                    .await;
            }
            return parent
                .record(
                    self,
                    incident,
                    IncidentState::Resolved,
                    None,
                    format!("verified healthy after {attempts} check(s): {last}"),
                    Extra {
                        verification: Some(verification),
                        ..Extra::default()
                    },
                )
                .await;
        }
        let why = format!("verification failed after {attempts} check(s): {last}");
        if applied.iter().any(|a| is_invertible(a.kind)) {
            self.roll_back_with(incident, ledger, parent, why, Some(verification))
                .await
        } else {
            let target = applied.last().map(|a| a.target.clone()).unwrap_or_default();
            parent
                .escalate(
                    self,
                    incident,
                    &target,
                    format!(
                        "{why}; nothing to undo (the actions changed no spec); humans notified"
                    ),
                    Extra {
                        verification: Some(verification),
                        ..Extra::default()
                    },
                )
                .await
        }
    }

    async fn roll_back(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        parent: &Parent,
        why: Option<String>,
    ) -> Result<(), HandlerError> {
        let why = why.unwrap_or_else(|| "continuing the rollback".into());
        self.roll_back_with(incident, ledger, parent, why, None)
            .await
    }

    /// Undoes the applied invertible actions, newest first (one record each), then escalates.
    async fn roll_back_with(
        &self,
        incident: &str,
        ledger: &IncidentLedger,
        _parent: &Parent,
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
            let parent = Parent::Record(
                self.ledger(incident)
                    .entries
                    .last()
                    .expect("records")
                    .envelope
                    .clone(),
            );
            match self.cluster.undo(&a).await {
                Ok(detail) => {
                    self.metrics
                        .actions
                        .with_label_values(&[a.kind.into(), "rolled_back"])
                        .inc();
                    parent
                        .record(
                            self,
                            incident,
                            IncidentState::RolledBack,
                            Some(a.clone()),
                            format!("{why}; rolled back: {detail}"),
                            Extra {
                                verification: verification.take(),
                                ..Extra::default()
                            },
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
        let parent = Parent::Record(ledger.entries.last().expect("records").envelope.clone());
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
        parent
            .escalate(
                self,
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

fn escalate_record(incident: &str, target: &str, mode: ActionMode) -> ActionRecord {
    ActionRecord {
        kind: ActionKind::Escalate,
        target: target.to_owned(),
        params: Default::default(),
        idempotency_key: idempotency_key(incident, ActionKind::Escalate, target),
        mode,
        approved_by: None,
    }
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

/// What the next record derives its envelope from: the previous record of the incident, or
/// the diagnosis for the first one.
enum Parent {
    Diagnosis(Envelope<Diagnosis>),
    Record(Envelope<Remediation>),
}

impl Parent {
    /// Hands the incident to humans: an `escalate` action on `target`, counted, recorded.
    async fn escalate(
        &self,
        engine: &Engine,
        incident: &str,
        target: &str,
        reason: String,
        extra: Extra,
    ) -> Result<(), HandlerError> {
        engine
            .metrics
            .actions
            .with_label_values(&["escalate", "escalated"])
            .inc();
        let action = escalate_record(incident, target, ActionMode::Auto);
        self.record(
            engine,
            incident,
            IncidentState::Escalated,
            Some(action),
            reason,
            extra,
        )
        .await
    }

    async fn record(
        &self,
        engine: &Engine,
        incident: &str,
        state: IncidentState,
        action: Option<ActionRecord>,
        reason: String,
        extra: Extra,
    ) -> Result<(), HandlerError> {
        match self {
            Self::Diagnosis(d) => {
                engine
                    .record(d, incident, state, action, reason, extra)
                    .await
            }
            Self::Record(r) => {
                engine
                    .record(r, incident, state, action, reason, extra)
                    .await
            }
        }
    }
}

/// The incident an approval is for: its envelope's, or the idempotency key's first part.
fn approval_incident(envelope: &Envelope<Approval>) -> String {
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

fn parent_id<Q: Serialize>(parent: &Envelope<Q>) -> uuid::Uuid {
    parent.id
}

fn derive<Q>(
    parent: &Envelope<Q>,
    discriminator: &str,
    record: Remediation,
) -> Envelope<Remediation> {
    Envelope::derive(parent, SOURCE, discriminator, record)
}
