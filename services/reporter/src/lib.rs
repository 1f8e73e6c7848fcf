//! reporter: writes every event of every topic to Splunk HEC, so that
//! `index=<idx> incident_id=<id> | sort _time` tells an incident's whole story.

pub mod hec;

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::topics;
use opsmesh_runtime::{
    BoxError, Component, ConfigError, ConfigTree, Context, Handler, HandlerError, Received,
    ServiceDef, StartError, Validate,
};

pub const SERVICE: ServiceDef = ServiceDef {
    name: "reporter",
    section: "reporter",
    about: "Writes every opsmesh topic to Splunk HEC (opsmesh:* sourcetypes)",
    build,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReporterConfig {
    pub hec: hec::HecConfig,
}

impl Validate for ReporterConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.hec.validate(&format!("{prefix}.hec"))
    }
}

fn build<'a>(
    tree: &'a ConfigTree,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move {
        let config: ReporterConfig = tree.section(SERVICE.section)?;
        let sink = hec::HecSink::new(&config.hec).map_err(|e| StartError::Service {
            service: SERVICE.name.into(),
            message: e.to_string(),
        })?;
        Ok(Arc::new(Reporter {
            ctx: ctx.clone(),
            sink: Arc::new(sink),
        }) as Arc<dyn Component>)
    })
}

pub struct Reporter {
    ctx: Context,
    sink: Arc<hec::HecSink>,
}

/// Every topic the reporter mirrors to Splunk.
pub const MIRRORED_TOPICS: &[&str] = &[
    topics::ALERTS,
    topics::TELEMETRY,
    topics::DIAGNOSES,
    topics::REMEDIATIONS,
    topics::APPROVALS,
];

impl Component for Reporter {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move {
            let handler = Arc::new(ToHec {
                sink: self.sink.clone(),
            });
            self.ctx
                .consume(SERVICE.name, MIRRORED_TOPICS, handler, shutdown)
                .await?;
            Ok(())
        })
    }
}

struct ToHec {
    sink: Arc<hec::HecSink>,
}

#[async_trait]
impl Handler for ToHec {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let event = self
            .sink
            .encode(&message.payload)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        // The offset is stored only after Splunk accepted the event: Kafka is the outbox.
        self.sink.send(&[event]).await.map_err(|e| {
            if e.is_retryable() {
                HandlerError::Transient(e.to_string())
            } else {
                HandlerError::Permanent(e.to_string())
            }
        })
    }
}
