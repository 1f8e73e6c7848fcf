//! The consume loop every service uses: at-least-once, bounded handler time, retries with
//! backoff for transient errors, DLQ for poison messages and permanent errors, and
//! deduplication on the envelope id.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{BusError, Publisher, Received};
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
    /// First retry delay; doubles per attempt, with jitter, up to `retry_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// How many recent envelope ids each consumer remembers to drop redeliveries.
    pub dedup_capacity: usize,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            handler_timeout: Duration::from_secs(30),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(10),
            dedup_capacity: 100_000,
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

enum Outcome {
    Handled,
    Duplicate,
    DeadLettered,
    /// Shutdown interrupted the work: leave the offset unstored so it is redelivered.
    Abandoned,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::Duplicate => "duplicate",
            Self::DeadLettered => "dead_lettered",
            Self::Abandoned => "abandoned",
        }
    }
}

/// Runs `handler` over `topics` as a member of `group` until `shutdown`; the message in
/// hand finishes first, then stored offsets are committed.
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
        "consumer started"
    );
    let worker = Worker {
        publisher,
        metrics,
        settings,
        group,
        handler,
        shutdown: &shutdown,
    };
    let mut recent = RecentIds::new(settings.dedup_capacity);
    let mut receive_failures = 0u32;
    loop {
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            received = subscription.recv() => received,
        };
        let message = match received {
            Ok(message) => {
                receive_failures = 0;
                message
            }
            Err(err) => {
                receive_failures += 1;
                tracing::warn!(group, error = %err, "receive failed; retrying");
                if worker.pause(receive_failures).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let in_flight = metrics.in_flight.with_label_values(&[group]);
        in_flight.inc();
        let outcome = worker.process(&message, &mut recent).await;
        in_flight.dec();
        metrics
            .consumed
            .with_label_values(&[group, &message.topic, outcome.label()])
            .inc();
        if matches!(outcome, Outcome::Abandoned) {
            break;
        }
        if let Err(err) = subscription.store(&message) {
            tracing::warn!(group, error = %err, "offset not stored; message will be redelivered");
        }
    }
    let committed = subscription.commit().await;
    tracing::info!(
        group,
        ok = committed.is_ok(),
        "consumer stopped; offsets committed"
    );
    committed
}

struct Worker<'a> {
    publisher: &'a Publisher,
    metrics: &'a BusMetrics,
    settings: &'a ConsumerSettings,
    group: &'a str,
    handler: Arc<dyn Handler>,
    shutdown: &'a CancellationToken,
}

struct Cancelled;

impl Worker<'_> {
    async fn process(&self, message: &Received, recent: &mut RecentIds) -> Outcome {
        let id = match serde_json::from_slice::<EnvelopeId>(&message.payload) {
            Ok(envelope) => envelope.id,
            Err(err) => {
                return self
                    .dead_letter(
                        message,
                        "poison",
                        &format!("not an opsmesh envelope: {err}"),
                    )
                    .await;
            }
        };
        if recent.contains(&id) {
            tracing::debug!(group = self.group, %id, "duplicate delivery dropped");
            return Outcome::Duplicate;
        }
        let started = Instant::now();
        let outcome = self.handle_with_retries(message, id).await;
        self.metrics
            .handler_seconds
            .with_label_values(&[self.group, &message.topic])
            .observe(started.elapsed().as_secs_f64());
        if matches!(outcome, Outcome::Handled | Outcome::DeadLettered) {
            recent.insert(id);
        }
        outcome
    }

    async fn handle_with_retries(&self, message: &Received, id: Uuid) -> Outcome {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result =
                tokio::time::timeout(self.settings.handler_timeout, self.handler.handle(message))
                    .await
                    .unwrap_or_else(|_| {
                        Err(HandlerError::Transient(format!(
                            "handler timed out after {:?}",
                            self.settings.handler_timeout
                        )))
                    });
            match result {
                Ok(()) => return Outcome::Handled,
                Err(HandlerError::Permanent(reason)) => {
                    tracing::warn!(group = self.group, %id, %reason, "permanent error");
                    return self.dead_letter(message, "permanent", &reason).await;
                }
                Err(HandlerError::Transient(reason)) if attempt >= self.settings.max_attempts => {
                    tracing::warn!(group = self.group, %id, %reason, attempt, "retries exhausted");
                    let reason = format!("retries exhausted after {attempt} attempts: {reason}");
                    return self
                        .dead_letter(message, "retries_exhausted", &reason)
                        .await;
                }
                Err(HandlerError::Transient(reason)) => {
                    tracing::info!(group = self.group, %id, %reason, attempt, "transient error; retrying");
                    self.metrics
                        .handler_retries
                        .with_label_values(&[self.group, &message.topic])
                        .inc();
                    if self.pause(attempt).await.is_err() {
                        return Outcome::Abandoned;
                    }
                }
            }
        }
    }

    /// Forwards the original bytes and headers to `<topic>.dlq`, adding why and from where.
    /// Keeps trying while the bus is down: dropping the message would lose it.
    async fn dead_letter(&self, message: &Received, reason: &str, error: &str) -> Outcome {
        let outgoing = message.dead_letter(reason, error, self.group);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.publisher.publish_raw(outgoing.clone()).await {
                Ok(_) => {
                    self.metrics
                        .dead_lettered
                        .with_label_values(&[self.group, &message.topic, reason])
                        .inc();
                    tracing::warn!(
                        group = self.group,
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

    /// Exponential backoff with full jitter; `Err` when shutdown interrupts it.
    async fn pause(&self, attempt: u32) -> Result<(), Cancelled> {
        let exp = self
            .settings
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
        let cap = exp.min(self.settings.retry_backoff_max);
        let delay = cap.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{
        bus::{Bus, HEADER_DLQ_ERROR, HEADER_DLQ_ORIGIN, MemoryBus, MemorySettings, Outgoing},
        metrics::{BusMetrics, new_registry},
    };

    struct Recorder {
        seen: Mutex<Vec<Vec<u8>>>,
        fail_first: Mutex<u32>,
    }

    #[async_trait]
    impl Handler for Recorder {
        async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
            if message.payload.windows(6).any(|w| w == b"poison") {
                return Err(HandlerError::Permanent("payload says poison".into()));
            }
            let mut fail = self.fail_first.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(HandlerError::Transient("flaky".into()));
            }
            self.seen.lock().unwrap().push(message.payload.clone());
            Ok(())
        }
    }

    fn envelope(id: Uuid, body: &str) -> Outgoing {
        Outgoing {
            topic: "t".into(),
            key: "k".into(),
            payload: format!(r#"{{"id":"{id}","body":"{body}"}}"#).into_bytes(),
            headers: vec![("opsmesh-schema".into(), b"t".into())],
        }
    }

    async fn run_until_idle(bus: &MemoryBus, handler: Arc<Recorder>, settings: ConsumerSettings) {
        let metrics = BusMetrics::new(&new_registry());
        let publisher = Publisher::new(Arc::new(bus.clone()), metrics.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        consume(
            &publisher,
            &metrics,
            &settings,
            "g",
            &["t"],
            handler,
            shutdown,
        )
        .await
        .unwrap();
    }

    fn fast() -> ConsumerSettings {
        ConsumerSettings {
            retry_backoff: Duration::from_millis(1),
            retry_backoff_max: Duration::from_millis(2),
            ..ConsumerSettings::default()
        }
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut recent = RecentIds::new(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            recent.insert(*id);
        }
        assert!(!recent.contains(&ids[0]), "the oldest is forgotten");
        assert!(recent.contains(&ids[1]) && recent.contains(&ids[2]));
        assert_eq!(recent.set.len(), 2);
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_transient_errors_retried() {
        let bus = MemoryBus::new(&MemorySettings::default());
        let id = Uuid::now_v7();
        bus.publish(envelope(id, "a")).await.unwrap();
        bus.publish(envelope(id, "a")).await.unwrap();
        bus.publish(envelope(Uuid::now_v7(), "b")).await.unwrap();
        let handler = Arc::new(Recorder {
            seen: Mutex::new(vec![]),
            fail_first: Mutex::new(2),
        });
        run_until_idle(&bus, handler.clone(), fast()).await;
        let seen = handler.seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            2,
            "a once (after two transient failures), b once"
        );
    }

    #[tokio::test]
    async fn poison_and_permanent_errors_go_to_the_dlq_with_origin_and_reason() {
        let bus = MemoryBus::new(&MemorySettings::default());
        bus.publish(Outgoing {
            payload: b"not json".to_vec(),
            ..envelope(Uuid::nil(), "")
        })
        .await
        .unwrap();
        bus.publish(envelope(Uuid::now_v7(), "poison"))
            .await
            .unwrap();
        bus.publish(envelope(Uuid::now_v7(), "fine")).await.unwrap();
        let handler = Arc::new(Recorder {
            seen: Mutex::new(vec![]),
            fail_first: Mutex::new(0),
        });
        run_until_idle(&bus, handler.clone(), fast()).await;
        assert_eq!(
            handler.seen.lock().unwrap().len(),
            1,
            "the consumer kept going"
        );
        let dlq = bus.snapshot("t.dlq");
        assert_eq!(dlq.len(), 2);
        assert_eq!(dlq[0].payload, b"not json", "original bytes kept");
        let error = String::from_utf8(dlq[0].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
        assert!(
            error.starts_with("poison: not an opsmesh envelope"),
            "{error}"
        );
        let error = String::from_utf8(dlq[1].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
        assert!(error.contains("payload says poison"), "{error}");
        let origin = format!("t/{}/1", dlq[1].partition);
        assert_eq!(dlq[1].header(HEADER_DLQ_ORIGIN).unwrap(), origin.as_bytes());
        assert_eq!(
            dlq[1].header("opsmesh-schema").unwrap(),
            b"t",
            "original headers kept"
        );
    }

    #[tokio::test]
    async fn transient_errors_past_the_attempt_limit_are_dead_lettered() {
        let bus = MemoryBus::new(&MemorySettings::default());
        bus.publish(envelope(Uuid::now_v7(), "x")).await.unwrap();
        let handler = Arc::new(Recorder {
            seen: Mutex::new(vec![]),
            fail_first: Mutex::new(100),
        });
        run_until_idle(
            &bus,
            handler,
            ConsumerSettings {
                max_attempts: 3,
                ..fast()
            },
        )
        .await;
        let dlq = bus.snapshot("t.dlq");
        assert_eq!(dlq.len(), 1);
        let error = String::from_utf8(dlq[0].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
        assert!(error.contains("after 3 attempts"), "{error}");
    }
}
