//! Indexer acknowledgement: one poller asks `/services/collector/ack` about every pending ack
//! id of the channel at once; each batch waits for its own id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{HecSink, metrics::WriterMetrics};

/// Pending ack ids and who waits for them.
#[derive(Default)]
pub struct AckTracker {
    pending: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl AckTracker {
    /// Waits for `id`; the receiver completes once Splunk answered `true` for it, and fails
    /// if the id was reused for another batch (Splunk restarted its channel), which means
    /// "send again".
    pub fn register(&self, id: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    /// Stops waiting for `id` (timed out).
    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Polls every `interval` until `stop`.
    pub async fn poll(
        self: Arc<Self>,
        sink: Arc<HecSink>,
        interval: Duration,
        metrics: WriterMetrics,
        stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let mut ids: Vec<u64> = self.lock().keys().copied().collect();
            metrics.acks_pending.set(ids.len() as i64);
            if ids.is_empty() {
                continue;
            }
            ids.sort_unstable();
            match sink.poll_acks(&ids).await {
                Ok(answers) => {
                    let mut pending = self.lock();
                    for (id, acked) in answers {
                        if acked && let Some(waiter) = pending.remove(&id) {
                            let _ = waiter.send(());
                        }
                    }
                    metrics.acks_pending.set(pending.len() as i64);
                }
                Err(err) => {
                    tracing::warn!(error = %err, pending = ids.len(), "polling HEC acks failed")
                }
            }
        }
    }
}
