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

mod batch;
mod delivery;
mod pipeline;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{
    Context, Publisher,
    backoff::{self, Interrupted},
    bus::{BusError, DeadLetters},
    metrics::BusMetrics,
};

use super::{
    HecConfig, HecError, HecSink,
    ack::AckTracker,
    health::{HecHealth, HecReadiness},
    metrics::WriterMetrics,
};
use pipeline::Pipeline;

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
    dead_letters: DeadLetters,
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
            dead_letters: DeadLetters::new(
                ctx.publisher.clone(),
                ctx.bus_metrics.clone(),
                group.clone(),
                config.retry_backoff,
                config.retry_backoff_max,
            ),
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
        self.bus_metrics.consumer_started(&self.group, topics);
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
        let mut pipeline = Pipeline::new(self.clone(), acks);
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
    async fn pause(&self, attempt: u32, stop: &CancellationToken) -> Result<(), Interrupted> {
        backoff::pause(
            self.config.retry_backoff,
            self.config.retry_backoff_max,
            attempt,
            stop,
        )
        .await
    }
}
