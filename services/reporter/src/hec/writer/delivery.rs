//! Settling one batch: poison to the DLQ, events to HEC (split in halves to find an event
//! HEC refuses, retried with backoff while HEC is away, waiting for the indexer's
//! acknowledgement when enabled), refused events to the DLQ.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context as TaskContext, Poll},
};

use opsmesh_runtime::{Received, backoff::Interrupted};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    HecWriter,
    batch::{Batch, Entry, Fate, Kind, Settled},
};
use crate::hec::{HecError, ack::AckTracker};

impl HecWriter {
    /// Settles one batch: poison to the DLQ, events to HEC until Splunk took each of them or
    /// refused it for its content (then it goes to the DLQ). Retries everything else.
    pub(super) async fn deliver(
        self: Arc<Self>,
        batch: Batch,
        acks: Option<Arc<AckTracker>>,
        stop: CancellationToken,
    ) -> Settled {
        let mut fates: Vec<Fate> = batch
            .entries
            .iter()
            .map(|e| match e.kind {
                Kind::Duplicate => Fate::Duplicate,
                _ => Fate::Delivered,
            })
            .collect();
        let outcome = self
            .deliver_entries(&batch, &mut fates, acks.as_deref(), &stop)
            .await;
        Settled {
            batch,
            fates,
            abandoned: outcome.is_err(),
        }
    }

    async fn deliver_entries(
        &self,
        batch: &Batch,
        fates: &mut [Fate],
        acks: Option<&AckTracker>,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        for (i, entry) in batch.entries.iter().enumerate() {
            if let Kind::Poison(reason) = &entry.kind {
                self.dead_letter(&entry.message, "poison", reason, stop)
                    .await?;
                fates[i] = Fate::DeadLettered;
            }
        }
        let events: Vec<usize> = batch
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, Kind::Event(_)))
            .map(|(i, _)| i)
            .collect();
        let mut work = VecDeque::new();
        if !events.is_empty() {
            work.push_back(events);
        }
        while let Some(chunk) = work.pop_front() {
            self.send_chunk(&batch.entries, chunk, fates, &mut work, acks, stop)
                .await?;
        }
        Ok(())
    }

    /// Sends `chunk` (indexes into `entries`) until every event in it is settled; pushes
    /// halves onto `work` when HEC refused the request for its content without naming the
    /// event.
    async fn send_chunk(
        &self,
        entries: &[Entry],
        mut chunk: Vec<usize>,
        fates: &mut [Fate],
        work: &mut VecDeque<Vec<usize>>,
        acks: Option<&AckTracker>,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let mut attempt = 0u32;
        while !chunk.is_empty() {
            let lines: Vec<&[u8]> = chunk.iter().map(|&i| entries[i].line()).collect();
            let started = std::time::Instant::now();
            let result = tokio::select! {
                () = stop.cancelled() => return Err(Interrupted),
                result = self.sink.post(&lines) => result,
            };
            self.metrics
                .request_seconds
                .observe(started.elapsed().as_secs_f64());
            let label = match &result {
                Ok(_) => "accepted",
                Err(err) => err.label(),
            };
            self.metrics.requests.with_label_values(&[label]).inc();
            match result {
                Ok(accepted) => {
                    self.reachable();
                    if acks.is_some()
                        && accepted.ack_id.is_none()
                        && !self.warned_no_ack.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(
                            "reporter.hec.ack.enabled but HEC answers without ackId (acknowledgement off for the token?); treating accepted batches as indexed"
                        );
                    }
                    if let (Some(tracker), Some(id)) = (acks, accepted.ack_id)
                        && !self.acknowledged(tracker, id, stop).await?
                    {
                        self.metrics.ack_timeouts.inc();
                        tracing::warn!(
                            ack_id = id,
                            events = chunk.len(),
                            timeout = ?self.config.ack.timeout,
                            "batch not acknowledged in time; sending it again"
                        );
                        attempt = 0;
                        continue;
                    }
                    self.count_delivered(entries, &chunk);
                    return Ok(());
                }
                Err(HecError::Partial {
                    invalid_event,
                    code,
                    text,
                }) if invalid_event < chunk.len() => {
                    self.reachable();
                    // Splunk indexed the events before the bad one: never send them again.
                    self.count_delivered(entries, &chunk[..invalid_event]);
                    let bad = chunk[invalid_event];
                    let reason = format!(
                        "HEC rejected the event (code {code}: {text}), event {invalid_event} of a batch of {}",
                        chunk.len()
                    );
                    self.dead_letter(&entries[bad].message, "rejected", &reason, stop)
                        .await?;
                    fates[bad] = Fate::DeadLettered;
                    chunk.drain(..=invalid_event);
                    attempt = 0;
                }
                Err(err @ (HecError::Rejected { .. } | HecError::Partial { .. })) => {
                    self.reachable();
                    if chunk.len() > 1 {
                        // Find the culprit: send each half on its own.
                        tracing::info!(error = %err, events = chunk.len(), "HEC rejected a batch; splitting it");
                        let second = chunk.split_off(chunk.len() / 2);
                        work.push_front(second);
                        work.push_front(chunk);
                        return Ok(());
                    }
                    let bad = chunk[0];
                    self.dead_letter(&entries[bad].message, "rejected", &err.to_string(), stop)
                        .await?;
                    fates[bad] = Fate::DeadLettered;
                    return Ok(());
                }
                Err(err @ HecError::Refused { .. }) => {
                    self.metrics.up.set(0);
                    self.metrics.paused.set(1);
                    if self.health.refusal().is_none() {
                        tracing::error!(error = %err, "HEC refuses the token or configuration; consumption paused, nothing is dropped");
                    }
                    self.health.refused(err.to_string());
                    // The next attempt reads the token file again: a fixed token resumes.
                    attempt += 1;
                    self.pause(attempt, stop).await?;
                }
                Err(err) => {
                    self.metrics.up.set(0);
                    attempt += 1;
                    if attempt == 1 {
                        tracing::warn!(error = %err, events = chunk.len(), "HEC send failed; retrying with backoff");
                    } else {
                        tracing::debug!(error = %err, attempt, "HEC send failed again");
                    }
                    self.pause(attempt, stop).await?;
                }
            }
        }
        Ok(())
    }

    fn reachable(&self) {
        self.metrics.up.set(1);
        self.metrics.paused.set(0);
        self.health.accepted();
    }

    fn count_delivered(&self, entries: &[Entry], chunk: &[usize]) {
        for &i in chunk {
            if let Kind::Event(event) = &entries[i].kind {
                self.metrics
                    .events
                    .with_label_values(&[event.sourcetype])
                    .inc();
            }
        }
    }

    /// Whether Splunk acknowledged `id` within the ack timeout.
    async fn acknowledged(
        &self,
        tracker: &AckTracker,
        id: u64,
        stop: &CancellationToken,
    ) -> Result<bool, Interrupted> {
        let waiter = tracker.register(id);
        tokio::select! {
            () = stop.cancelled() => {
                tracker.forget(id);
                Err(Interrupted)
            }
            answer = tokio::time::timeout(self.config.ack.timeout, waiter) => match answer {
                Ok(Ok(())) => Ok(true),
                // The id was handed out again (HEC restarted): the batch's fate is unknown.
                Ok(Err(_)) => Ok(false),
                Err(_) => {
                    tracker.forget(id);
                    Ok(false)
                }
            },
        }
    }

    /// Forwards `message` to its DLQ, counted by reason; `Err` when `stop` comes first.
    async fn dead_letter(
        &self,
        message: &Received,
        reason: &str,
        error: &str,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        // A publish may hang while the bus is down: the flush deadline does not wait for it.
        tokio::select! {
            () = stop.cancelled() => return Err(Interrupted),
            forwarded = self.dead_letters.forward(message, reason, error, stop) => forwarded?,
        }
        self.metrics
            .dead_lettered
            .with_label_values(&[reason])
            .inc();
        Ok(())
    }
}

/// A spawned delivery that is aborted when dropped (the writer was dropped: a crash).
pub(super) struct Delivery(pub(super) JoinHandle<Settled>);

impl Future for Delivery {
    type Output = Result<Settled, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.map_err(|e| e.to_string()))
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.0.abort();
    }
}
