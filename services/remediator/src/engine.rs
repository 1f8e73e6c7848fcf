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

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState, Lineage,
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
    ledger::{self, IncidentLedger, LedgerView, STUCK, is_invertible, is_mutating},
    metrics::Metrics,
    plan::{self, Plan, idempotency_key},
    policy::{History, SLOT_REFUSAL},
    state::{reopen, transition},
};

pub const SOURCE: &str = "opsmesh-remediator";

mod act;
mod admission;
mod approval;
mod background;
mod drive;
mod heads;
mod investigation;
mod ladder;

use act::escalate_record;
use approval::approval_incident;

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

/// The next record of an incident: the state it enters and why.
struct Decision {
    state: IncidentState,
    action: Option<ActionRecord>,
    reason: String,
    extra: Extra,
    /// The message the record answers (the diagnosis, an approval, an investigation's
    /// report); unset: the incident's previous record.
    cause: Option<Lineage>,
    /// An investigation's report takes the escalated incident up ([`reopen`]).
    reopens: bool,
}

impl Decision {
    fn new(state: IncidentState, reason: String) -> Self {
        Self {
            state,
            action: None,
            reason,
            extra: Extra::default(),
            cause: None,
            reopens: false,
        }
    }

    fn action(mut self, action: Option<ActionRecord>) -> Self {
        self.action = action;
        self
    }

    fn extra(mut self, extra: Extra) -> Self {
        self.extra = extra;
        self
    }

    fn caused_by<Q>(mut self, message: &Envelope<Q>) -> Self {
        self.cause = Some(message.lineage());
        self
    }

    /// The record takes up an escalated incident (an investigation's report).
    fn reopening(mut self) -> Self {
        self.reopens = true;
        self
    }
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
    /// to the view. Its envelope derives from the decision's cause, else from the incident's
    /// previous record.
    async fn record(&self, incident: &str, decision: Decision) -> Result<(), HandlerError> {
        let ledger = self.ledger(incident);
        let Decision {
            state,
            action,
            reason,
            extra,
            cause,
            reopens,
        } = decision;
        let next = if reopens { reopen } else { transition };
        next(ledger.state(), state).map_err(|e| {
            tracing::error!(%incident, error = %e, "refusing to record an illegal transition");
            HandlerError::Permanent(format!("incident {incident}: {e}"))
        })?;
        let parent = cause
            .or_else(|| ledger.entries.last().map(|e| e.envelope.lineage()))
            .ok_or_else(|| {
                HandlerError::Permanent(format!(
                    "incident {incident}: a first record needs a cause"
                ))
            })?;
        let diagnosis_id = ledger.diagnosis_id().unwrap_or(parent.id);
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
        let mut envelope =
            Envelope::derive_from(&parent, SOURCE, &format!("{incident}:{seq}"), record);
        envelope.incident_id = Some(incident.to_owned());
        ledger::seal(
            &mut envelope,
            seq,
            ledger.last_hash(),
            self.keys.ledger.as_ref(),
        );
        // One span per ledger step, in the incident's trace even when a timer took the step.
        let step = tracing::info_span!("ledger.record", %incident, seq, %state);
        opsmesh_runtime::telemetry::context::join_trace(&step, &parent.trace);
        tracing::Instrument::instrument(self.publisher.publish(incident, &envelope), step)
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

    /// Hands the incident to humans: an `escalate` action on `target`, counted, recorded.
    async fn escalate(
        &self,
        incident: &str,
        target: &str,
        reason: String,
        extra: Extra,
    ) -> Result<(), HandlerError> {
        self.metrics
            .actions
            .with_label_values(&["escalate", "escalated"])
            .inc();
        let action = escalate_record(incident, target, ActionMode::Auto);
        self.record(
            incident,
            Decision::new(IncidentState::Escalated, reason)
                .action(Some(action))
                .extra(extra),
        )
        .await
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
        let own = view
            .incident(incident)
            .map(|l| {
                l.executions()
                    .filter(|(at, a)| *at >= since && is_mutating(a.kind))
                    .map(|(at, a)| (at, a.target.clone()))
                    .collect()
            })
            .unwrap_or_default();
        History {
            in_flight: view.in_flight(incident),
            recent,
            own,
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
}
