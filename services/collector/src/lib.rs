//! collector: reads the cluster on an interval and publishes `opsmesh.telemetry.v1`.
//!
//! This first version runs the service shell (configuration, health, metrics, shutdown);
//! it has no sources configured yet, so it publishes nothing.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{
    BoxError, Component, ConfigError, ConfigTree, Context, ServiceDef, StartError, Validate,
};

pub const SERVICE: ServiceDef = ServiceDef {
    name: "collector",
    section: "collector",
    about: "Reads KServe, pods, Kyverno, OpenCost and ArgoCD state into opsmesh.telemetry.v1",
    build,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// How often every source is read.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
        }
    }
}

impl Validate for CollectorConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                format!("{prefix}.interval"),
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

fn build<'a>(
    tree: &'a ConfigTree,
    _ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move {
        let config: CollectorConfig = tree.section(SERVICE.section)?;
        Ok(Arc::new(Collector { config }) as Arc<dyn Component>)
    })
}

pub struct Collector {
    config: CollectorConfig,
}

impl Component for Collector {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move {
            tracing::info!(interval = ?self.config.interval, "collector started with no sources configured");
            shutdown.cancelled().await;
            Ok(())
        })
    }
}
