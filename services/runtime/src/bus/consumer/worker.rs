//! Handling one message: deduplication, bounded handler time, retries with backoff for
//! transient errors, and the DLQ for poison messages and permanent errors.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use opsmesh_proto::envelope::HEADER_TRACEPARENT;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    ConsumerSettings, Handler, HandlerError, Pending,
    dedup::{EnvelopeId, RecentIds},
};
use crate::{
    backoff::{self, Interrupted},
    bus::{DeadLetters, Received},
    metrics::BusMetrics,
    telemetry::context,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Handled,
    Duplicate,
    DeadLettered,
    /// Shutdown interrupted the work: leave the offset unstored so it is redelivered.
    Abandoned,
}

impl Outcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::Duplicate => "duplicate",
            Self::DeadLettered => "dead_lettered",
            Self::Abandoned => "abandoned",
        }
    }
}

pub(super) struct Worker {
    pub(super) dead_letters: DeadLetters,
    pub(super) metrics: BusMetrics,
    pub(super) settings: ConsumerSettings,
    pub(super) group: String,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) shutdown: CancellationToken,
    pub(super) recent: Mutex<RecentIds>,
}

impl Worker {
    fn seen(&self, id: &Uuid) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    fn remember(&self, id: Uuid) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    /// Handles `message` in its consumer span, a child of the span that published it.
    pub(super) async fn process(&self, message: &Received) -> (Outcome, Option<Pending>) {
        let span = context::consumer_span(
            &message.topic,
            &self.group,
            message.header(HEADER_TRACEPARENT),
        );
        self.process_in_span(message).instrument(span).await
    }

    async fn process_in_span(&self, message: &Received) -> (Outcome, Option<Pending>) {
        let id = match serde_json::from_slice::<EnvelopeId>(&message.payload) {
            Ok(envelope) => envelope.id,
            Err(err) => {
                let outcome = self
                    .dead_letter(
                        message,
                        "poison",
                        &format!("not an opsmesh envelope: {err}"),
                    )
                    .await;
                return (outcome, None);
            }
        };
        if self.seen(&id) {
            tracing::debug!(group = %self.group, %id, "duplicate delivery dropped");
            return (Outcome::Duplicate, None);
        }
        let started = Instant::now();
        let (outcome, deferred) = self.handle_with_retries(message, id).await;
        self.metrics
            .handler_seconds
            .with_label_values(&[&self.group, &message.topic])
            .observe(started.elapsed().as_secs_f64());
        if matches!(outcome, Outcome::Handled | Outcome::DeadLettered) {
            self.remember(id);
        }
        (outcome, deferred)
    }

    async fn handle_with_retries(
        &self,
        message: &Received,
        id: Uuid,
    ) -> (Outcome, Option<Pending>) {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = tokio::time::timeout(
                self.settings.handler_timeout,
                self.handler.handle_or_defer(message),
            )
            .await
            .unwrap_or_else(|_| {
                Err(HandlerError::Transient(format!(
                    "handler timed out after {:?}",
                    self.settings.handler_timeout
                )))
            });
            let group = self.group.as_str();
            match result {
                Ok(deferred) => return (Outcome::Handled, deferred),
                Err(HandlerError::Permanent(reason)) => {
                    tracing::warn!(group, %id, %reason, "permanent error");
                    return (self.dead_letter(message, "permanent", &reason).await, None);
                }
                Err(HandlerError::Transient(reason))
                    if attempt >= self.settings.max_attempts
                        || started.elapsed() >= self.settings.retry_budget =>
                {
                    tracing::warn!(group, %id, %reason, attempt, "retries exhausted");
                    let reason = format!(
                        "retries exhausted after {attempt} attempts in {:.1?}: {reason}",
                        started.elapsed()
                    );
                    let outcome = self
                        .dead_letter(message, "retries_exhausted", &reason)
                        .await;
                    return (outcome, None);
                }
                Err(HandlerError::Transient(reason)) => {
                    tracing::info!(group, %id, %reason, attempt, "transient error; retrying");
                    self.metrics
                        .handler_retries
                        .with_label_values(&[group, &message.topic])
                        .inc();
                    if self.pause(attempt).await.is_err() {
                        return (Outcome::Abandoned, None);
                    }
                }
            }
        }
    }

    /// Forwards `message` to its DLQ; `Abandoned` when shutdown interrupts the retries.
    pub(super) async fn dead_letter(
        &self,
        message: &Received,
        reason: &str,
        error: &str,
    ) -> Outcome {
        match self
            .dead_letters
            .forward(message, reason, error, &self.shutdown)
            .await
        {
            Ok(()) => Outcome::DeadLettered,
            Err(Interrupted) => Outcome::Abandoned,
        }
    }

    /// Exponential backoff with jitter; `Err` when shutdown interrupts it.
    pub(super) async fn pause(&self, attempt: u32) -> Result<(), Interrupted> {
        backoff::pause(
            self.settings.retry_backoff,
            self.settings.retry_backoff_max,
            attempt,
            &self.shutdown,
        )
        .await
    }
}
