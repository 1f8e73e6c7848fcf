//! The HEC writer: its own consumer loop over every mirrored topic. Kafka is the outbox —
//! messages are batched (count, bytes, linger), sent, and their offsets stored only once
//! Splunk accepted (or acknowledged) them, in order, so an outage of any length within the
//! topics' retention loses nothing.
//!
//! Lingering only pays while a delivery is on its way: when nothing is in flight, the batch
//! is sealed as soon as the messages already received are in it, so an event reaches Splunk
//! without waiting for `linger` at low traffic and batches still fill under load.
//!
//! ```text
//! recv ─► encode / dedup ─► batch ─(full, linger or idle)─► ready ─(≤ max_in_flight)─► deliver task
//!   ▲                                                                              │
//!   └── paused while `ready` waits for room          store offsets, in batch order ◄┘
//! ```
//!
//! "Paused" pauses the subscription's partitions but keeps calling `recv`: a Kafka member
//! that stops polling for `max.poll.interval` (a Splunk outage can last longer) is evicted,
//! and the rebalance would hand its unstored messages to another member, to be sent twice.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context as TaskContext, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{FutureExt, StreamExt, stream::FuturesOrdered};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{
    Context, Publisher, Received,
    bus::{BusError, RecentIds, Subscription},
    metrics::BusMetrics,
};

use super::{
    EncodedEvent, HecConfig, HecError, HecSink,
    ack::AckTracker,
    health::{HecHealth, HecReadiness},
    metrics::WriterMetrics,
};

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Hec(#[from] HecError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("a HEC delivery task failed: {0}")]
    Task(String),
}

/// Writes every message of `topics` to HEC as a member of `group`.
pub struct HecWriter {
    sink: Arc<HecSink>,
    config: HecConfig,
    publisher: Publisher,
    bus_metrics: BusMetrics,
    metrics: WriterMetrics,
    health: Arc<HecHealth>,
    group: String,
    /// Share of `shutdown.grace` spent flushing batches in hand.
    flush_budget: Duration,
    warned_no_ack: AtomicBool,
}

impl HecWriter {
    /// Registers the writer's metrics and its readiness check on `ctx`.
    pub fn new(ctx: &Context, config: &HecConfig, group: String) -> Result<Self, HecError> {
        let sink = Arc::new(HecSink::new(config)?);
        let health = Arc::new(HecHealth::default());
        ctx.health.register(Arc::new(HecReadiness(health.clone())));
        Ok(Self {
            sink,
            config: config.clone(),
            publisher: ctx.publisher.clone(),
            bus_metrics: ctx.bus_metrics.clone(),
            metrics: WriterMetrics::new(&ctx.registry),
            health,
            group,
            flush_budget: ctx.settings.shutdown.grace.mul_f64(0.75),
            warned_no_ack: AtomicBool::new(false),
        })
    }

    pub fn sink(&self) -> &Arc<HecSink> {
        &self.sink
    }

    /// Consumes until `shutdown`, then flushes what it holds (within `shutdown.grace`),
    /// stores the offsets of what Splunk took and commits.
    pub async fn run(
        self: Arc<Self>,
        topics: &[&str],
        shutdown: CancellationToken,
    ) -> Result<(), WriterError> {
        let mut subscription = self.publisher.bus().subscribe(&self.group, topics).await?;
        tracing::info!(
            group = %self.group,
            ?topics,
            channel = self.sink.channel().unwrap_or("-"),
            max_batch_events = self.config.max_batch_events,
            max_batch_bytes = self.config.max_batch_bytes,
            linger = ?self.config.linger,
            ack = self.config.ack.enabled,
            "HEC writer started"
        );
        let stop_background = CancellationToken::new();
        // Also stops the background tasks when this future is dropped (a crash).
        let _background = stop_background.clone().drop_guard();
        tokio::spawn(self.clone().startup_health_check());
        let acks = self.config.ack.enabled.then(|| {
            let tracker = Arc::new(AckTracker::default());
            tokio::spawn(tracker.clone().poll(
                self.sink.clone(),
                self.config.ack.poll_interval,
                self.metrics.clone(),
                stop_background.clone(),
            ));
            tracker
        });
        let mut pipeline = Pipeline {
            writer: self.clone(),
            acks,
            hard_stop: CancellationToken::new(),
            batch: Batch::default(),
            ready: VecDeque::new(),
            in_flight: FuturesOrdered::new(),
            in_flight_meta: VecDeque::new(),
            recent: RecentIds::new(self.config.dedup_capacity),
        };
        let result = pipeline.run(subscription.as_mut(), &shutdown).await;
        stop_background.cancel();
        let committed = subscription.commit().await;
        tracing::info!(
            group = %self.group,
            ok = committed.is_ok(),
            "HEC writer stopped; offsets committed"
        );
        result?;
        committed.map_err(WriterError::from)
    }

    async fn startup_health_check(self: Arc<Self>) {
        match self.sink.health().await {
            Ok(()) => {
                self.metrics.up.set(1);
                tracing::info!("HEC health check passed");
            }
            Err(err) => {
                self.metrics.up.set(0);
                tracing::warn!(error = %err, "HEC health check failed; events wait on the bus until it recovers");
            }
        }
    }

    /// Exponential backoff with jitter; `Err` when `stop` interrupts it.
    async fn pause(&self, attempt: u32, stop: &CancellationToken) -> Result<(), Stopped> {
        let delay = opsmesh_runtime::backoff::delay(
            self.config.retry_backoff,
            self.config.retry_backoff_max,
            attempt,
        );
        tokio::select! {
            () = stop.cancelled() => Err(Stopped),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Settles one batch: poison to the DLQ, events to HEC until Splunk took each of them or
    /// refused it for its content (then it goes to the DLQ). Retries everything else.
    async fn deliver(
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
    ) -> Result<(), Stopped> {
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
    ) -> Result<(), Stopped> {
        let mut attempt = 0u32;
        while !chunk.is_empty() {
            let lines: Vec<&[u8]> = chunk.iter().map(|&i| entries[i].line()).collect();
            let started = std::time::Instant::now();
            let result = tokio::select! {
                () = stop.cancelled() => return Err(Stopped),
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
    ) -> Result<bool, Stopped> {
        let waiter = tracker.register(id);
        tokio::select! {
            () = stop.cancelled() => {
                tracker.forget(id);
                Err(Stopped)
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

    /// Forwards the original bytes and headers to `<topic>.dlq`, adding why and from where.
    /// Keeps trying while the bus is down: dropping the message would lose it.
    async fn dead_letter(
        &self,
        message: &Received,
        reason: &str,
        error: &str,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let outgoing = message.dead_letter(reason, error, &self.group);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let published = tokio::select! {
                () = stop.cancelled() => return Err(Stopped),
                published = self.publisher.publish_raw(outgoing.clone()) => published,
            };
            match published {
                Ok(_) => {
                    self.metrics
                        .dead_lettered
                        .with_label_values(&[reason])
                        .inc();
                    self.bus_metrics
                        .dead_lettered
                        .with_label_values(&[&self.group, &message.topic, reason])
                        .inc();
                    tracing::warn!(
                        group = %self.group,
                        topic = %message.topic,
                        partition = message.partition,
                        offset = message.offset,
                        reason,
                        error,
                        "message sent to DLQ instead of HEC"
                    );
                    return Ok(());
                }
                Err(_) => self.pause(attempt, stop).await?,
            }
        }
    }
}

/// The shutdown deadline passed before the work finished.
#[derive(Debug)]
struct Stopped;

enum Kind {
    Event(EncodedEvent),
    /// Its envelope id was already taken (or is being sent) in this process.
    Duplicate,
    /// Not an opsmesh envelope (or of an unknown schema): to the DLQ with this reason.
    Poison(String),
}

struct Entry {
    message: Received,
    kind: Kind,
}

impl Entry {
    fn line(&self) -> &[u8] {
        match &self.kind {
            Kind::Event(event) => &event.line,
            _ => &[],
        }
    }
}

#[derive(Default)]
struct Batch {
    entries: Vec<Entry>,
    events: usize,
    bytes: usize,
    /// Event time of the oldest event.
    oldest: Option<f64>,
    /// When the first entry arrived (linger starts).
    started: Option<Instant>,
}

impl Batch {
    fn push(&mut self, entry: Entry) {
        if let Kind::Event(event) = &entry.kind {
            self.events += 1;
            self.bytes += event.line.len() + 1;
            self.oldest = Some(self.oldest.map_or(event.time, |t| t.min(event.time)));
        }
        self.started.get_or_insert_with(Instant::now);
        self.entries.push(entry);
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn meta(&self) -> Meta {
        Meta {
            entries: self.entries.len(),
            events: self.events,
            oldest: self.oldest,
        }
    }
}

/// What the gauges need of a batch that is being delivered.
#[derive(Clone, Copy)]
struct Meta {
    entries: usize,
    events: usize,
    oldest: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    Duplicate,
    DeadLettered,
}

impl Fate {
    /// `bus_consumed_total{outcome}`, as the shared consumer loop counts.
    fn label(self) -> &'static str {
        match self {
            Self::Delivered => "handled",
            Self::Duplicate => "duplicate",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

struct Settled {
    batch: Batch,
    fates: Vec<Fate>,
    /// The shutdown deadline came first: nothing of it (or after it) may be stored.
    abandoned: bool,
}

/// A spawned delivery that is aborted when dropped (the writer was dropped: a crash).
struct Delivery(JoinHandle<Settled>);

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

enum Step {
    Shutdown,
    Received(Result<Received, BusError>),
    Settled(Result<Settled, String>),
    Linger,
    Tick,
}

struct Pipeline {
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
    async fn run(
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
                    if self.in_flight.is_empty() && self.ready.is_empty() {
                        self.seal();
                    }
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
