//! The consume loop every service uses: at-least-once, messages of different keys handled
//! concurrently and each key's in order, offsets stored only past finished messages, bounded
//! handler time, retries with backoff for transient errors, DLQ for poison messages and
//! permanent errors, and deduplication on the envelope id.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use serde::Deserialize;
use tokio::{sync::oneshot, task::JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{BusError, Publisher, Received, Subscription};
use crate::{
    config::{ConfigError, Validate},
    metrics::BusMetrics,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    /// Longest a handler may take for one attempt; a timeout counts as a transient error.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// Attempts per message before it goes to the DLQ.
    pub max_attempts: u32,
    /// Longest a message is retried on transient errors before it goes to the DLQ: a
    /// dependency outage of minutes must not dead-letter work.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// First retry delay; doubles per attempt, with jitter, up to `retry_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// How many recent envelope ids each consumer remembers to drop redeliveries.
    pub dedup_capacity: usize,
    /// Messages in hand per consumer (handled now or waiting behind their key); the consumer
    /// stops fetching at this bound.
    pub max_in_flight: usize,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            handler_timeout: Duration::from_secs(30),
            max_attempts: 100,
            retry_budget: Duration::from_secs(10 * 60),
            retry_backoff: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(10),
            dedup_capacity: 100_000,
            max_in_flight: 256,
        }
    }
}

impl Validate for ConsumerSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.handler_timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{prefix}.handler_timeout"),
                "must be > 0",
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_attempts"),
                "must be >= 1",
            ));
        }
        if self.retry_backoff > self.retry_backoff_max {
            return Err(ConfigError::invalid(
                format!("{prefix}.retry_backoff"),
                "must not exceed retry_backoff_max",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_in_flight"),
                "must be >= 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (a dependency is down, a timeout).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (invalid content); the message goes to the DLQ.
    #[error("{0}")]
    Permanent(String),
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one message. Must be idempotent; returns after everything it published was
    /// acknowledged, because the offset is stored as soon as it returns `Ok`.
    async fn handle(&self, message: &Received) -> Result<(), HandlerError>;

    /// What the consume loop calls. A handler that hands work to the background returns a
    /// [`Pending`]: the handler slot and the message's key are free at once, but the message
    /// stays unfinished (its offset and every later one of its partition unstored) until the
    /// background work settles it, so a crash before then redelivers it.
    async fn handle_or_defer(&self, message: &Received) -> Result<Option<Pending>, HandlerError> {
        self.handle(message).await.map(|()| None)
    }

    /// The loop is about to hand over a message of a partition it did not just read the
    /// previous offset of: the partition's first in this consumer, or one after a reassignment
    /// (rewound, or moved on by another member). Called before that message is handled; a
    /// handler whose state other replicas also write catches up before handling it (see
    /// [`super::PartitionBarrier`]).
    fn partition_resumed(&self, _topic: &str, _partition: i32) {}
}

/// The consumer's side of deferred work: resolves when the work settles (or is dropped).
pub struct Pending(oneshot::Receiver<()>);

/// The background work's side: [`Settle::settle`] when the message's work is done for good;
/// dropping it unsettled (shutdown, a revoked partition) leaves the message to be redelivered.
#[derive(Debug)]
pub struct Settle(oneshot::Sender<()>);

impl Settle {
    pub fn settle(self) {
        let _ = self.0.send(());
    }
}

/// A linked pair: the handler returns the [`Pending`] and keeps the [`Settle`].
pub fn defer() -> (Settle, Pending) {
    let (tx, rx) = oneshot::channel();
    (Settle(tx), Pending(rx))
}

/// Just enough of the envelope to deduplicate without knowing the payload type.
#[derive(Deserialize)]
struct EnvelopeId {
    id: Uuid,
}

/// Remembers the last `capacity` envelope ids, to drop redeliveries.
pub struct RecentIds {
    capacity: usize,
    set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.set.contains(id)
    }

    pub fn insert(&mut self, id: Uuid) {
        if self.capacity == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Handled,
    Duplicate,
    DeadLettered,
    /// Shutdown interrupted the work: leave the offset unstored so it is redelivered.
    Abandoned,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::Duplicate => "duplicate",
            Self::DeadLettered => "dead_lettered",
            Self::Abandoned => "abandoned",
        }
    }
}

/// Messages with the same key are handled in order, one at a time; an unkeyed message is
/// ordered with the rest of its partition.
fn ordering_key(message: &Received) -> Vec<u8> {
    match &message.key {
        Some(key) => key.clone(),
        None => format!("\0{}/{}", message.topic, message.partition).into_bytes(),
    }
}

/// Offsets of one partition in hand (handled now or waiting for their key), oldest first.
/// Only the run of finished offsets at the front is stored: a crash redelivers everything from
/// the oldest unfinished message on, never less.
#[derive(Default)]
struct PartitionProgress {
    /// Offset -> finished.
    pending: BTreeMap<i64, bool>,
    /// Highest offset received in this assignment; a lower one means the partition was
    /// reassigned and rewound to its committed offset.
    highest: Option<i64>,
}

impl PartitionProgress {
    /// Registers a received offset; `false` when it rewinds the partition (earlier entries
    /// belonged to a previous assignment and are forgotten).
    fn received(&mut self, offset: i64) -> bool {
        let rewound = self.highest.is_some_and(|h| offset <= h);
        if rewound {
            self.pending.clear();
        }
        self.highest = Some(offset);
        self.pending.insert(offset, false);
        !rewound
    }

    /// Marks `offset` finished; returns the newest offset that may now be stored, if the
    /// front of the partition moved.
    fn finished(&mut self, offset: i64) -> Option<i64> {
        if let Some(done) = self.pending.get_mut(&offset) {
            *done = true;
        }
        let mut storable = None;
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            storable = Some(*entry.key());
            entry.remove();
        }
        storable
    }
}

/// Runs `handler` over `topics` as a member of `group` until `shutdown`.
///
/// Messages of different keys are handled concurrently (at most
/// `settings.max_in_flight` in hand, waiting ones included); messages of one key in order.
/// Each partition's offset is stored only up to its oldest unfinished message. On shutdown
/// nothing new starts, the handlers in hand finish (bounded by `handler_timeout`; retries
/// stop), and stored offsets are committed.
pub async fn consume(
    publisher: &Publisher,
    metrics: &BusMetrics,
    settings: &ConsumerSettings,
    group: &str,
    topics: &[&str],
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let mut subscription = publisher.bus().subscribe(group, topics).await?;
    tracing::info!(
        group,
        ?topics,
        bus = publisher.bus().kind(),
        max_in_flight = settings.max_in_flight,
        "consumer started"
    );
    let worker = Arc::new(Worker {
        publisher: publisher.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        group: group.to_owned(),
        handler,
        shutdown: shutdown.clone(),
        recent: Mutex::new(RecentIds::new(settings.dedup_capacity)),
    });
    let mut lanes = Lanes::new(worker);
    let mut receive_failures = 0u32;
    let mut paused = false;
    loop {
        // At the bound the subscription is paused, not left unpolled: a Kafka member that
        // does not poll for `max.poll.interval` (a message retried for minutes with its key's
        // later ones waiting behind it) is evicted and its messages handled twice.
        let full = lanes.in_hand >= settings.max_in_flight;
        if full != paused {
            let switched = if full {
                subscription.pause()
            } else {
                subscription.resume()
            };
            match switched {
                Ok(()) => paused = full,
                Err(err) => {
                    tracing::warn!(group, error = %err, pause = full, "pausing or resuming the subscription failed")
                }
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = lanes.running.join_next(), if !lanes.running.is_empty() => {
                lanes.finish(done, subscription.as_mut());
            }
            Some(settled) = lanes.deferred.next(), if !lanes.deferred.is_empty() => {
                lanes.settled(settled, subscription.as_mut());
            }
            // A message can still arrive while paused (fetched just before): it is taken.
            received = subscription.recv() => {
                match received {
                    Ok(message) => {
                        receive_failures = 0;
                        lanes.admit(message);
                    }
                    Err(err) => {
                        receive_failures += 1;
                        tracing::warn!(group, error = %err, "receive failed; retrying");
                        if lanes.worker.pause(receive_failures).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    let draining = lanes.running.len();
    if draining > 0 {
        tracing::info!(group, handlers = draining, "draining handlers in hand");
    }
    lanes.waiting.clear();
    while let Some(done) = lanes.running.join_next().await {
        lanes.finish(done, subscription.as_mut());
    }
    // Deferred work is not waited for (it may take minutes): what settled already counts, the
    // rest is redelivered to whoever owns the partition next, which resumes it.
    while let Some(Some(settled)) = lanes.deferred.next().now_or_never() {
        lanes.settled(settled, subscription.as_mut());
    }
    let committed = subscription.commit().await;
    tracing::info!(
        group,
        ok = committed.is_ok(),
        "consumer stopped; offsets committed"
    );
    committed
}

/// A finished handling, with what is needed to store its offset and free its key.
struct Done {
    key: Vec<u8>,
    topic: String,
    partition: i32,
    offset: i64,
    outcome: Outcome,
    /// Handled, but the background work it started must settle before the offset counts.
    deferred: Option<Pending>,
}

/// A deferred message whose work settled (`true`) or was dropped unsettled (`false`).
type Settled = BoxFuture<'static, (String, i32, i64, bool)>;

/// The messages in hand: one running handler per key, the key's later messages waiting
/// behind it, and each partition's progress.
struct Lanes {
    worker: Arc<Worker>,
    running: JoinSet<Done>,
    waiting: HashMap<Vec<u8>, VecDeque<Received>>,
    progress: HashMap<(String, i32), PartitionProgress>,
    /// Running plus waiting: the bound `max_in_flight` applies to this.
    in_hand: usize,
    deferred: FuturesUnordered<Settled>,
}

impl Lanes {
    fn new(worker: Arc<Worker>) -> Self {
        Self {
            worker,
            running: JoinSet::new(),
            waiting: HashMap::new(),
            progress: HashMap::new(),
            in_hand: 0,
            deferred: FuturesUnordered::new(),
        }
    }

    fn admit(&mut self, message: Received) {
        let progress = self
            .progress
            .entry((message.topic.clone(), message.partition))
            .or_default();
        if progress.highest.is_none_or(|h| message.offset != h + 1) {
            self.worker
                .handler
                .partition_resumed(&message.topic, message.partition);
        }
        if !progress.received(message.offset) {
            tracing::info!(
                group = %self.worker.group,
                topic = %message.topic,
                partition = message.partition,
                offset = message.offset,
                "partition rewound (reassigned); tracking restarts at this offset"
            );
        }
        self.in_hand += 1;
        let key = ordering_key(&message);
        match self.waiting.get_mut(&key) {
            // The key has a running handler: wait behind it.
            Some(queue) => queue.push_back(message),
            None => {
                self.waiting.insert(key.clone(), VecDeque::new());
                self.start(key, message);
            }
        }
    }

    fn start(&mut self, key: Vec<u8>, message: Received) {
        let worker = self.worker.clone();
        self.running.spawn(async move {
            let in_flight = worker.metrics.in_flight.with_label_values(&[&worker.group]);
            in_flight.inc();
            // A panicking handler is a bug in that handler: its message is dead-lettered, the
            // loop and every other key carry on.
            let (outcome, deferred) = match AssertUnwindSafe(worker.process(&message))
                .catch_unwind()
                .await
            {
                Ok(done) => done,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let outcome = worker
                        .dead_letter(&message, "panic", &format!("handler panicked: {what}"))
                        .await;
                    (outcome, None)
                }
            };
            in_flight.dec();
            worker
                .metrics
                .consumed
                .with_label_values(&[&worker.group, &message.topic, outcome.label()])
                .inc();
            Done {
                key,
                topic: message.topic,
                partition: message.partition,
                offset: message.offset,
                outcome,
                deferred,
            }
        });
    }

    fn finish(
        &mut self,
        done: Result<Done, tokio::task::JoinError>,
        subscription: &mut dyn Subscription,
    ) {
        let done = match done {
            Ok(done) => done,
            // Only cancellation (the runtime shutting down) ends a task without a `Done`.
            Err(err) => {
                tracing::warn!(group = %self.worker.group, error = %err, "handler task lost");
                return;
            }
        };
        self.in_hand -= 1;
        match self.waiting.get_mut(&done.key).map(VecDeque::pop_front) {
            Some(Some(next)) if !self.worker.shutdown.is_cancelled() => {
                self.start(done.key.clone(), next)
            }
            _ => {
                self.waiting.remove(&done.key);
            }
        }
        // An abandoned message stays unfinished: nothing after it in its partition is stored.
        if done.outcome == Outcome::Abandoned {
            return;
        }
        match done.deferred {
            Some(Pending(settled)) => {
                let deferred = self
                    .worker
                    .metrics
                    .deferred
                    .with_label_values(&[&self.worker.group]);
                deferred.inc();
                self.deferred.push(Box::pin(async move {
                    let settled = settled.await.is_ok();
                    deferred.dec();
                    (done.topic, done.partition, done.offset, settled)
                }));
            }
            None => self.finished(done.topic, done.partition, done.offset, subscription),
        }
    }

    /// Deferred work settled: its message counts as finished. Unsettled (dropped) work leaves
    /// it unfinished, to be redelivered.
    fn settled(
        &mut self,
        (topic, partition, offset, settled): (String, i32, i64, bool),
        subscription: &mut dyn Subscription,
    ) {
        if settled {
            self.finished(topic, partition, offset, subscription);
        }
    }

    fn finished(
        &mut self,
        topic: String,
        partition: i32,
        offset: i64,
        subscription: &mut dyn Subscription,
    ) {
        let Some(progress) = self.progress.get_mut(&(topic.clone(), partition)) else {
            return;
        };
        if let Some(offset) = progress.finished(offset) {
            let position = Received {
                topic,
                partition,
                offset,
                key: None,
                payload: Vec::new(),
                headers: Vec::new(),
            };
            if let Err(err) = subscription.store(&position) {
                tracing::warn!(group = %self.worker.group, error = %err, "offset not stored; messages will be redelivered");
            }
        }
    }
}

struct Worker {
    publisher: Publisher,
    metrics: BusMetrics,
    settings: ConsumerSettings,
    group: String,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    recent: Mutex<RecentIds>,
}

struct Cancelled;

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

    async fn process(&self, message: &Received) -> (Outcome, Option<Pending>) {
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

    /// Forwards the original bytes and headers to `<topic>.dlq`, adding why and from where.
    /// Keeps trying while the bus is down: dropping the message would lose it.
    async fn dead_letter(&self, message: &Received, reason: &str, error: &str) -> Outcome {
        let outgoing = message.dead_letter(reason, error, &self.group);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.publisher.publish_raw(outgoing.clone()).await {
                Ok(_) => {
                    self.metrics
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
                        "message sent to DLQ"
                    );
                    return Outcome::DeadLettered;
                }
                Err(_) if self.pause(attempt).await.is_err() => return Outcome::Abandoned,
                Err(_) => {}
            }
        }
    }

    /// Exponential backoff with jitter; `Err` when shutdown interrupts it.
    async fn pause(&self, attempt: u32) -> Result<(), Cancelled> {
        let delay = crate::backoff::delay(
            self.settings.retry_backoff,
            self.settings.retry_backoff_max,
            attempt,
        );
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
