//! reporter: writes every event of every topic to Splunk HEC, so that
//! `index=<idx> incident_id=<id> | sort _time` tells an incident's whole story.

pub mod hec;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::topics;
use opsmesh_runtime::{
    BoxError, Component, ConfigError, ConfigTree, Context, ServiceDef, StartError, Validate,
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
        Ok(Arc::new(Reporter::new(ctx, &config)?) as Arc<dyn Component>)
    })
}

pub struct Reporter {
    writer: Arc<hec::HecWriter>,
}

impl Reporter {
    /// The reporter on `ctx` (registers its metrics and readiness check there).
    pub fn new(ctx: &Context, config: &ReporterConfig) -> Result<Self, StartError> {
        let group = format!("{}{}", ctx.settings.bus.group_prefix, SERVICE.name);
        let writer =
            hec::HecWriter::new(ctx, &config.hec, group).map_err(|e| StartError::Service {
                service: SERVICE.name.into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            writer: Arc::new(writer),
        })
    }
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
            // Kafka is the outbox: offsets are stored only after Splunk took the batch.
            self.writer
                .clone()
                .run(MIRRORED_TOPICS, shutdown)
                .await
                .map_err(BoxError::from)
        })
    }
}
