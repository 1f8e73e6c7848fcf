//! Forwarding what a consumer group gives up on to `<topic>.dlq`: the consumer loop's
//! workers and the services that consume on their own (the reporter's HEC writer).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Publisher, Received};
use crate::{
    backoff::{self, Interrupted},
    metrics::BusMetrics,
};

/// A consumer group's way to its dead-letter topics.
#[derive(Clone)]
pub struct DeadLetters {
    publisher: Publisher,
    metrics: BusMetrics,
    group: String,
    retry_backoff: Duration,
    retry_backoff_max: Duration,
}

impl DeadLetters {
    /// Forwards as `group`, pausing `retry_backoff` (doubling up to `retry_backoff_max`)
    /// between attempts.
    pub fn new(
        publisher: Publisher,
        metrics: BusMetrics,
        group: String,
        retry_backoff: Duration,
        retry_backoff_max: Duration,
    ) -> Self {
        Self {
            publisher,
            metrics,
            group,
            retry_backoff,
            retry_backoff_max,
        }
    }

    /// Forwards the original bytes and headers to `<topic>.dlq`, adding why and from where,
    /// and counts it in `bus_dead_lettered_total`. Keeps trying while the bus is down:
    /// dropping the message would lose it. `Err` when `stop` interrupts a pause.
    pub async fn forward(
        &self,
        message: &Received,
        reason: &str,
        error: &str,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let outgoing = message.dead_letter(reason, error, &self.group);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.publisher.publish_raw(outgoing.clone()).await.is_ok() {
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
                return Ok(());
            }
            backoff::pause(self.retry_backoff, self.retry_backoff_max, attempt, stop).await?;
        }
    }
}
