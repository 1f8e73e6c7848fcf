//! Feeds the store from the bus: a consumer group of this replica's own, so that every
//! replica sees every partition.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::topics;
use opsmesh_runtime::{BoxError, Context, Handler, HandlerError, Received};

use super::IncidentStore;

/// Topics the timeline joins.
pub const TIMELINE_TOPICS: &[&str] = &[
    topics::ALERTS,
    topics::DIAGNOSES,
    topics::REMEDIATIONS,
    topics::APPROVALS,
    topics::INVESTIGATIONS,
    topics::INVESTIGATION_REQUESTS,
];

pub struct TimelineFeed {
    store: Arc<IncidentStore>,
    /// `reporter-timeline-<replica>`; the runtime prefixes `bus.group_prefix`.
    service: String,
}

impl TimelineFeed {
    pub fn new(store: Arc<IncidentStore>, replica_id: &str) -> Self {
        Self {
            store,
            service: format!("reporter-timeline-{replica_id}"),
        }
    }

    /// Consumer group name without the configured prefix.
    pub fn service(&self) -> &str {
        &self.service
    }

    pub async fn run(&self, ctx: &Context, shutdown: CancellationToken) -> Result<(), BoxError> {
        tracing::info!(
            group = %format!("{}{}", ctx.settings.bus.group_prefix, self.service),
            "incident timeline consumer started"
        );
        ctx.consume(
            &self.service,
            TIMELINE_TOPICS,
            Arc::new(Apply(self.store.clone())),
            shutdown,
        )
        .await?;
        Ok(())
    }
}

struct Apply(Arc<IncidentStore>);

#[async_trait]
impl Handler for Apply {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        self.0.apply_message(&message.topic, &message.payload);
        Ok(())
    }
}
