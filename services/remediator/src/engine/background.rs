//! The engine's background side: the agenda runner, what follows a step, the sweeper, and
//! escalations of incidents that cannot go on.

use super::*;

impl Engine {
    /// Escalates every incident whose proposal expired, and every incident stuck: neither
    /// terminal nor awaiting approval, no record for `stuck_after`, and no work of this
    /// replica driving it (a lost message, a step that failed for good).
    pub async fn sweep(&self) -> Result<(), HandlerError> {
        let (expired, stale) = {
            let mut view = self.view.lock().expect("ledger view lock");
            let now = Utc::now();
            view.forget_executions_before(
                now.checked_sub_signed(self.lookback())
                    .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC),
            );
            let stuck_after = chrono::Duration::from_std(self.config.stuck_after)
                .unwrap_or(chrono::Duration::MAX);
            let stale: Vec<String> = view
                .open()
                .filter(|(_, l)| {
                    l.state()
                        .is_some_and(|s| !s.is_terminal() && s != IncidentState::AwaitingApproval)
                        && l.entries
                            .last()
                            .is_some_and(|e| now - e.occurred_at >= stuck_after)
                })
                .map(|(id, _)| id.clone())
                .collect();
            (
                view.expired_proposals(now, self.config.approvals.expiry),
                stale,
            )
        };
        for incident in expired {
            let _guard = self.locks.lock(&incident).await;
            if self.ledger(&incident).state() == Some(IncidentState::AwaitingApproval) {
                self.expire(&incident).await?;
            }
        }
        for incident in stale {
            if self.agenda.holds(&incident) {
                continue;
            }
            let _guard = self.locks.lock(&incident).await;
            self.escalate_stuck(&incident, None).await?;
        }
        Ok(())
    }

    /// Hands an incident that cannot make progress to humans, saying where it stopped.
    pub(super) async fn escalate_stuck(
        &self,
        incident: &str,
        error: Option<&str>,
    ) -> Result<(), HandlerError> {
        let ledger = self.ledger(incident);
        let (Some(state), Some(last)) = (ledger.state(), ledger.entries.last()) else {
            return Ok(());
        };
        if state.is_terminal() || state == IncidentState::AwaitingApproval {
            return Ok(());
        }
        let since = (Utc::now() - last.occurred_at).to_std().unwrap_or_default();
        let since =
            humantime_serde::re::humantime::format_duration(Duration::from_secs(since.as_secs()));
        let target = ledger
            .applied()
            .last()
            .map(|a| a.target.clone())
            .or_else(|| ledger.planned().first().map(|a| a.target.clone()))
            .unwrap_or_default();
        let error = error
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        self.metrics
            .stuck
            .with_label_values(&[<&str>::from(state)])
            .inc();
        tracing::warn!(%incident, %state, %since, "incident stuck; escalating");
        self.escalate(
            incident,
            &target,
            format!("{STUCK}{state} for {since}{error}; humans notified"),
            Extra::default(),
        )
        .await
    }

    /// After a step: at rest, the messages it continued are done; otherwise it goes on the
    /// agenda and the caller gets the message's [`Pending`] (when it brought one).
    pub(super) fn follow_up(
        &self,
        incident: &str,
        mut task: Task,
        progress: Progress,
        step: Result<Step, HandlerError>,
        from_message: bool,
    ) -> Option<Pending> {
        task.checks_done = progress.checks_done;
        match step {
            Ok(Step::Rest) => {
                task.settle();
                return None;
            }
            Ok(Step::CheckAt(due)) => {
                task.due = due;
                task.waiting = Waiting::Check;
                task.failures = 0;
                task.failing_since = None;
            }
            Ok(Step::NoSlot) => {
                // Also woken as soon as a slot frees.
                task.due = Instant::now() + self.config.retry_backoff_max;
                task.waiting = Waiting::Slot;
            }
            Err(HandlerError::Permanent(e)) => {
                // A bug (an illegal transition): nothing to retry; the sweeper escalates it.
                tracing::error!(%incident, error = %e, "incident step failed permanently");
                task.settle();
                return None;
            }
            Err(HandlerError::Transient(e)) => {
                task.failures += 1;
                task.failing_since.get_or_insert_with(Instant::now);
                task.due = Instant::now()
                    + opsmesh_runtime::backoff::delay(
                        self.config.retry_backoff,
                        self.config.retry_backoff_max,
                        task.failures,
                    );
                task.waiting = Waiting::Retry;
                tracing::warn!(%incident, error = %e, attempt = task.failures, "incident step failed; retrying");
                task.last_error = Some(e);
            }
        }
        let pending = from_message.then(|| {
            let (settle, pending) = defer();
            task.settles.push(settle);
            pending
        });
        self.agenda.put(incident, task);
        pending
    }

    /// Runs the agenda until `shutdown`: every due incident takes its next step, up to
    /// `max_parallel_steps` at once.
    pub async fn run_agenda(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(tokio::sync::Semaphore::new(self.config.max_parallel_steps));
        loop {
            for (incident, task) in self.agenda.take_due(Instant::now()) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let engine = self.clone();
                let span = engine.step_span(&incident);
                let step = async move {
                    engine.step(&incident, task).await;
                    drop(permit);
                };
                tokio::spawn(tracing::Instrument::instrument(step, span));
            }
            self.publish_agenda_metrics();
            let next = self
                .agenda
                .next_due()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.agenda.changed() => {}
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }

    fn publish_agenda_metrics(&self) {
        for (waiting, count) in self.agenda.counts() {
            let label = match waiting {
                Waiting::Check => "check",
                Waiting::Slot => "slot",
                Waiting::Retry => "retry",
            };
            self.metrics
                .agenda
                .with_label_values(&[label])
                .set(count as i64);
        }
    }

    /// The span of a background step, in the incident's trace (that of its latest record).
    fn step_span(&self, incident: &str) -> tracing::Span {
        let span = tracing::info_span!(parent: None, "remediation.step", %incident);
        let view = self.view.lock().expect("ledger view lock");
        if let Some(last) = view.incident(incident).and_then(|l| l.entries.last()) {
            opsmesh_runtime::telemetry::context::join_trace(&span, &last.envelope.trace);
        }
        span
    }

    /// One background step of an incident.
    async fn step(&self, incident: &str, mut task: Task) {
        let _guard = self.locks.lock(incident).await;
        if let Some(since) = task.failing_since
            && since.elapsed() >= self.config.retry_budget
        {
            let error = task.last_error.take();
            match self.escalate_stuck(incident, error.as_deref()).await {
                Ok(()) => return task.settle(),
                Err(e) => task.last_error = Some(e.to_string()),
            }
        }
        let mut progress = Progress {
            checks_done: task.checks_done,
        };
        let diagnosis = task.diagnosis.clone();
        let step = self
            .advance(incident, diagnosis.as_ref(), &mut progress)
            .await;
        self.follow_up(incident, task, progress, step, false);
    }

    pub(super) async fn expire(&self, incident: &str) -> Result<(), HandlerError> {
        let ledger = self.ledger(incident);
        if ledger.entries.is_empty() {
            return Ok(());
        }
        let target = ledger
            .proposals()
            .first()
            .map(|(p, _)| p.target.clone())
            .unwrap_or_default();
        self.metrics
            .actions
            .with_label_values(&["escalate", "escalated"])
            .inc();
        // Deterministic content and id: two replicas expiring the same proposal publish the
        // same record, which consumers drop as a repeat.
        self.record(
            incident,
            Decision::new(
                IncidentState::Escalated,
                format!(
                    "the proposal expired: no decision within {} of it; humans notified",
                    humantime_serde::re::humantime::format_duration(self.config.approvals.expiry)
                ),
            )
            .action(Some(escalate_record(incident, &target, ActionMode::Auto))),
        )
        .await
    }
}
