//! The consume loop every service uses: at-least-once, messages of different keys handled
//! concurrently and each key's in order, offsets stored only past finished messages, bounded
//! handler time, retries with backoff for transient errors, DLQ for poison messages and
//! permanent errors, and deduplication on the envelope id.
//!
//! This module holds the settings, the handler contract and the loop; the messages in hand,
//! the handling of one message and the deduplication each have a submodule.

mod dedup;
mod lanes;
#[cfg(test)]
mod tests;
mod worker;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{BusError, DeadLetters, Publisher, Received};
use crate::{
    config::{ConfigError, Validate},
    metrics::BusMetrics,
};

pub use dedup::RecentIds;
use lanes::Lanes;
use worker::Worker;

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
    metrics.consumer_started(group, topics);
    tracing::info!(
        group,
        ?topics,
        bus = publisher.bus().kind(),
        max_in_flight = settings.max_in_flight,
        "consumer started"
    );
    let worker = Arc::new(Worker {
        dead_letters: DeadLetters::new(
            publisher.clone(),
            metrics.clone(),
            group.to_owned(),
            settings.retry_backoff,
            settings.retry_backoff_max,
        ),
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
