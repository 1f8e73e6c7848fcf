//! Signed chain heads: every `ledger.heads_interval` the replica publishes, on
//! `opsmesh.ledger-heads.v1`, where each chain it wrote to since the last time now ends. A
//! chain read back shorter than a signed head says was cut short (`opsmesh audit verify`).

use std::sync::Arc;

use opsmesh_proto::{
    Envelope,
    ledger::{ChainHead, LedgerHeads, heads_signed_bytes},
};
use tokio_util::sync::CancellationToken;

use super::{Engine, SOURCE};

/// Heads per message, so one message stays far below the bus's size limit.
const HEADS_PER_MESSAGE: usize = 500;

impl Engine {
    /// Notes that `incident`'s chain now ends at `seq` with `hash`.
    pub(super) fn wrote_head(&self, incident: &str, seq: u64, hash: &str) {
        if self.keys.ledger.is_none() {
            return; // unsigned heads would prove nothing
        }
        let mut heads = self.heads.lock().expect("heads lock");
        let head = heads
            .entry(incident.to_owned())
            .or_insert_with(|| ChainHead {
                incident_id: incident.to_owned(),
                seq,
                hash: hash.to_owned(),
            });
        if seq >= head.seq {
            head.seq = seq;
            head.hash = hash.to_owned();
        }
    }

    /// Publishes the pending heads every `ledger.heads_interval`, and once more at shutdown.
    pub async fn publish_heads(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(signer) = self.keys.ledger.as_ref() else {
            return;
        };
        let mut tick = tokio::time::interval(self.config.ledger.heads_interval);
        tick.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                () = shutdown.cancelled() => true,
            };
            let pending: Vec<ChainHead> =
                std::mem::take(&mut *self.heads.lock().expect("heads lock"))
                    .into_values()
                    .collect();
            for chunk in pending.chunks(HEADS_PER_MESSAGE) {
                let mut envelope = Envelope::new(
                    SOURCE,
                    self.home_cluster.clone(),
                    None,
                    LedgerHeads {
                        heads: chunk.to_vec(),
                        signature: None,
                    },
                );
                envelope.payload.signature = Some(signer.sign(&heads_signed_bytes(&envelope)));
                if let Err(e) = self.publisher.publish(&self.home_cluster, &envelope).await {
                    tracing::warn!(error = %e, heads = chunk.len(), "cannot publish ledger heads; retried at the next interval");
                    for head in chunk {
                        self.wrote_head(&head.incident_id, head.seq, &head.hash);
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}
