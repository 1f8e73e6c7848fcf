//! The loop that receives, batches and dispatches deliveries, and stores offsets in batch
//! order as deliveries settle (see the module documentation of `writer`).

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{FutureExt, StreamExt, stream::FuturesOrdered};
use opsmesh_runtime::{
    Received,
    bus::{BusError, RecentIds, Subscription},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    HecWriter, WriterError,
    batch::{Batch, Entry, Fate, Kind, Meta, Settled},
    delivery::Delivery,
};
use crate::hec::ack::AckTracker;

enum Step {
    Shutdown,
    Received(Result<Received, BusError>),
    Settled(Result<Settled, String>),
    Linger,
    Tick,
}

pub(super) struct Pipeline {
    writer: Arc<HecWriter>,
    acks: Option<Arc<AckTracker>>,
    /// Cancelled when the flush budget after shutdown is spent.
    hard_stop: CancellationToken,
    batch: Batch,
    /// Sealed batches waiting for a delivery slot; the subscription is paused while one
    /// waits.
    ready: VecDeque<Batch>,
    in_flight: FuturesOrdered<Delivery>,
    in_flight_meta: VecDeque<Meta>,
    recent: RecentIds,
}

impl Pipeline {
    pub(super) fn new(writer: Arc<HecWriter>, acks: Option<Arc<AckTracker>>) -> Self {
        let recent = RecentIds::new(writer.config.dedup_capacity);
        Self {
            writer,
            acks,
            hard_stop: CancellationToken::new(),
            batch: Batch::default(),
            ready: VecDeque::new(),
            in_flight: FuturesOrdered::new(),
            in_flight_meta: VecDeque::new(),
            recent,
        }
    }

    pub(super) async fn run(
        &mut self,
        subscription: &mut dyn Subscription,
        shutdown: &CancellationToken,
    ) -> Result<(), WriterError> {
        let linger = self.writer.config.linger;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut receive_failures = 0u32;
        let mut paused = false;
        loop {
            let linger_at = self.batch.started.map(|s| s + linger);
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => Step::Shutdown,
                Some(settled) = self.in_flight.next(), if !self.in_flight.is_empty() => Step::Settled(settled),
                () = tokio::time::sleep_until(linger_at.unwrap_or_else(Instant::now)), if linger_at.is_some() => Step::Linger,
                // Always polled, paused or not (see the module's documentation).
                received = subscription.recv() => Step::Received(received),
                _ = ticker.tick() => Step::Tick,
            };
            match step {
                Step::Shutdown => break,
                Step::Received(Ok(message)) => {
                    receive_failures = 0;
                    self.accept(message);
                    self.accept_ready(subscription);
                }
                Step::Received(Err(err)) => {
                    receive_failures += 1;
                    tracing::warn!(error = %err, "receive failed; retrying");
                    if self.writer.pause(receive_failures, shutdown).await.is_err() {
                        break;
                    }
                }
                Step::Settled(settled) => {
                    let settled = settled.map_err(WriterError::Task)?;
                    if !self.settle(subscription, settled) {
                        return Err(WriterError::Task(
                            "a batch was abandoned while running".into(),
                        ));
                    }
                }
                Step::Linger => self.seal(),
                Step::Tick => {}
            }
            // An idle pipe sends what it holds at once: after a receive, and after the last
            // delivery settled with events that came in while it was on its way.
            if self.in_flight.is_empty() && self.ready.is_empty() {
                self.seal();
            }
            self.dispatch(false);
            let full = !self.ready.is_empty();
            if full != paused {
                let switched = if full {
                    subscription.pause()
                } else {
                    subscription.resume()
                };
                match switched {
                    Ok(()) => paused = full,
                    // Tried again after the next step.
                    Err(err) => {
                        tracing::warn!(error = %err, pause = full, "pausing or resuming the subscription failed")
                    }
                }
            }
            self.update_gauges();
        }
        self.drain(subscription).await
    }

    /// Shutdown: send what is in hand, settle it within the flush budget, store in order.
    async fn drain(&mut self, subscription: &mut dyn Subscription) -> Result<(), WriterError> {
        self.seal();
        self.dispatch(true);
        let budget = self.writer.flush_budget;
        let hard_stop = self.hard_stop.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(budget).await;
            hard_stop.cancel();
        });
        let mut storing = true;
        while let Some(settled) = self.in_flight.next().await {
            match settled {
                Ok(settled) if storing => storing = self.settle(subscription, settled),
                Ok(_) => {
                    self.in_flight_meta.pop_front();
                    self.writer
                        .metrics
                        .batches
                        .with_label_values(&["abandoned"])
                        .inc();
                }
                Err(err) => {
                    tracing::error!(error = %err, "HEC delivery task failed while stopping");
                    self.in_flight_meta.pop_front();
                    storing = false;
                }
            }
        }
        timer.abort();
        self.update_gauges();
        if !storing {
            tracing::warn!(
                ?budget,
                "shutdown budget spent before HEC took everything; the rest is redelivered after the restart"
            );
        }
        Ok(())
    }

    /// Encodes one received message into the open batch.
    fn accept(&mut self, message: Received) {
        let writer = self.writer.clone();
        let kind = match writer.sink.encode_line(&message.payload) {
            Ok(event) if self.recent.contains(&event.id) => {
                writer.metrics.duplicates.inc();
                tracing::debug!(id = %event.id, "duplicate delivery dropped");
                Kind::Duplicate
            }
            Ok(event) => {
                self.recent.insert(event.id);
                Kind::Event(event)
            }
            Err(err) => Kind::Poison(err.to_string()),
        };
        let len = match &kind {
            Kind::Event(event) => event.line.len() + 1,
            _ => 0,
        };
        if self.batch.events > 0 && self.batch.bytes + len > writer.config.max_batch_bytes {
            self.seal();
        }
        self.batch.push(Entry { message, kind });
        if self.batch.entries.len() >= writer.config.max_batch_events {
            self.seal();
        }
    }

    /// Takes the messages the subscription already holds, up to one batch, without waiting.
    fn accept_ready(&mut self, subscription: &mut dyn Subscription) {
        for _ in 1..self.writer.config.max_batch_events {
            match subscription.recv().now_or_never() {
                Some(Ok(message)) => self.accept(message),
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "receive failed; retrying");
                    return;
                }
                None => return,
            }
        }
    }

    fn seal(&mut self) {
        if !self.batch.is_empty() {
            self.ready.push_back(std::mem::take(&mut self.batch));
        }
    }

    /// Starts deliveries for sealed batches while slots are free (all of them when `all`).
    fn dispatch(&mut self, all: bool) {
        while all || self.in_flight.len() < self.writer.config.max_in_flight {
            let Some(batch) = self.ready.pop_front() else {
                return;
            };
            let metrics = &self.writer.metrics;
            metrics.batch_events.observe(batch.events as f64);
            metrics.batch_bytes.observe(batch.bytes as f64);
            self.in_flight_meta.push_back(batch.meta());
            let work =
                self.writer
                    .clone()
                    .deliver(batch, self.acks.clone(), self.hard_stop.clone());
            self.in_flight.push_back(Delivery(tokio::spawn(work)));
        }
    }

    /// Stores the offsets of a settled batch; `false` if it was abandoned.
    fn settle(&mut self, subscription: &mut dyn Subscription, settled: Settled) -> bool {
        self.in_flight_meta.pop_front();
        let metrics = &self.writer.metrics;
        if settled.abandoned {
            metrics.batches.with_label_values(&["abandoned"]).inc();
            return false;
        }
        let group = self.writer.group.as_str();
        let mut failed_stores = 0;
        for (entry, fate) in settled.batch.entries.iter().zip(&settled.fates) {
            self.writer
                .bus_metrics
                .consumed
                .with_label_values(&[group, &entry.message.topic, fate.label()])
                .inc();
            if subscription.store(&entry.message).is_err() {
                failed_stores += 1;
            }
        }
        if failed_stores > 0 {
            tracing::warn!(
                failed_stores,
                "offsets not stored (partitions revoked?); those messages will be redelivered"
            );
        }
        let outcome = if settled.fates.contains(&Fate::DeadLettered) {
            "partial"
        } else {
            "delivered"
        };
        metrics.batches.with_label_values(&[outcome]).inc();
        true
    }

    fn update_gauges(&self) {
        let metas = self
            .in_flight_meta
            .iter()
            .copied()
            .chain(self.ready.iter().map(Batch::meta))
            .chain(std::iter::once(self.batch.meta()));
        let (mut entries, mut events, mut oldest) = (0, 0, None::<f64>);
        for meta in metas {
            entries += meta.entries;
            events += meta.events;
            if let Some(t) = meta.oldest {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        let metrics = &self.writer.metrics;
        metrics.in_hand.set(entries as i64);
        metrics.unsent.set(events as i64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics
            .oldest_unsent
            .set(oldest.map_or(0.0, |t| (now - t).max(0.0)));
        self.writer
            .bus_metrics
            .in_flight
            .with_label_values(&[&self.writer.group])
            .set(entries as i64);
    }
}
