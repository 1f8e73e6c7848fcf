//! The messages in hand: one running handler per key with the key's later messages waiting
//! behind it, each partition's progress, and which offsets may be stored.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    panic::AssertUnwindSafe,
    sync::Arc,
};

use futures::{FutureExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::task::JoinSet;

use super::{
    Pending,
    worker::{Outcome, Worker},
};
use crate::bus::{Received, Subscription};

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
pub(super) struct PartitionProgress {
    /// Offset -> finished.
    pub(super) pending: BTreeMap<i64, bool>,
    /// Highest offset received in this assignment; a lower one means the partition was
    /// reassigned and rewound to its committed offset.
    pub(super) highest: Option<i64>,
}

impl PartitionProgress {
    /// Registers a received offset; `false` when it rewinds the partition (earlier entries
    /// belonged to a previous assignment and are forgotten).
    pub(super) fn received(&mut self, offset: i64) -> bool {
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
    pub(super) fn finished(&mut self, offset: i64) -> Option<i64> {
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

/// A finished handling, with what is needed to store its offset and free its key.
pub(super) struct Done {
    key: Vec<u8>,
    topic: String,
    partition: i32,
    offset: i64,
    outcome: Outcome,
    /// Handled, but the background work it started must settle before the offset counts.
    deferred: Option<Pending>,
}

/// A deferred message whose work settled (`true`) or was dropped unsettled (`false`).
pub(super) type Settled = BoxFuture<'static, (String, i32, i64, bool)>;

/// The messages in hand: one running handler per key, the key's later messages waiting
/// behind it, and each partition's progress.
pub(super) struct Lanes {
    pub(super) worker: Arc<Worker>,
    pub(super) running: JoinSet<Done>,
    pub(super) waiting: HashMap<Vec<u8>, VecDeque<Received>>,
    pub(super) progress: HashMap<(String, i32), PartitionProgress>,
    /// Running plus waiting: the bound `max_in_flight` applies to this.
    pub(super) in_hand: usize,
    pub(super) deferred: FuturesUnordered<Settled>,
}

impl Lanes {
    pub(super) fn new(worker: Arc<Worker>) -> Self {
        Self {
            worker,
            running: JoinSet::new(),
            waiting: HashMap::new(),
            progress: HashMap::new(),
            in_hand: 0,
            deferred: FuturesUnordered::new(),
        }
    }

    pub(super) fn admit(&mut self, message: Received) {
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

    pub(super) fn finish(
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
    pub(super) fn settled(
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
