//! reporter: the read side of opsmesh. Writes every event of every topic to Splunk HEC, so
//! that `index=<idx> incident_id=<id> | sort _time` tells an incident's whole story; keeps the
//! incident timeline in memory; serves the operator console, the incident API and an MCP
//! server; notifies Slack and PagerDuty.

pub mod approvals;
pub mod auth;
pub mod console;
pub mod hec;
pub mod investigate;
pub mod mcp;
pub mod notify;
pub mod runbooks;
pub mod timeline;

use std::sync::Arc;

use actix_web::web;
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
    about: "Writes every opsmesh topic to Splunk HEC, keeps the incident timeline, serves the console and MCP, notifies Slack/PagerDuty",
    build,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReporterConfig {
    pub approvals: approvals::ApprovalsConfig,
    pub hec: hec::HecConfig,
    pub timeline: timeline::TimelineConfig,
    pub console: console::ConsoleConfig,
    pub mcp: mcp::McpConfig,
    pub notify: notify::NotifyConfig,
}

impl Validate for ReporterConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.hec.validate(&format!("{prefix}.hec"))?;
        self.timeline.validate(&format!("{prefix}.timeline"))?;
        self.console.validate(&format!("{prefix}.console"))?;
        self.mcp.validate(&format!("{prefix}.mcp"))?;
        self.notify.validate(&format!("{prefix}.notify"))
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
    ctx: Context,
    writer: Arc<hec::HecWriter>,
    store: Arc<timeline::IncidentStore>,
    feed: timeline::TimelineFeed,
    console: Option<Arc<console::Console>>,
    mcp: Option<Arc<mcp::McpHttp>>,
    notifier: Option<Arc<notify::Notifier>>,
    /// Cancelled when the application stops: ends live streams (SSE, MCP) so HTTP drains.
    streams: CancellationToken,
}

fn service_error(message: impl std::fmt::Display) -> StartError {
    StartError::Service {
        service: SERVICE.name.into(),
        message: message.to_string(),
    }
}

impl Reporter {
    /// The reporter on `ctx` (registers its metrics and readiness check there).
    pub fn new(ctx: &Context, config: &ReporterConfig) -> Result<Self, StartError> {
        let group = format!("{}{}", ctx.settings.bus.group_prefix, SERVICE.name);
        let writer = hec::HecWriter::new(ctx, &config.hec, group).map_err(service_error)?;
        let store = Arc::new(timeline::IncidentStore::new(
            &config.timeline,
            &ctx.registry,
        ));
        let feed =
            timeline::TimelineFeed::new(store.clone(), &config.timeline.effective_replica_id());
        let streams = CancellationToken::new();
        let decider =
            approvals::Decider::new(&config.approvals, store.clone(), ctx.publisher.clone())?;
        let requester = investigate::Requester::new(
            store.clone(),
            ctx.publisher.clone(),
            &ctx.settings.cluster,
        );
        let failed_auth = console::login_limit::FailedAuthMetrics::new(&ctx.registry);
        let console = if config.console.enabled {
            Some(Arc::new(console::Console::new(
                &config.console,
                store.clone(),
                decider.clone(),
                requester.clone(),
                streams.clone(),
                &ctx.registry,
                &failed_auth,
            )?))
        } else {
            None
        };
        let mcp = if config.mcp.enabled {
            let server = mcp::McpServer::new(store.clone(), decider, requester, None);
            Some(Arc::new(mcp::McpHttp::new(
                &config.mcp,
                server,
                streams.clone(),
                &failed_auth,
            )?))
        } else {
            None
        };
        let notifier = notify::Notifier::new(ctx, &config.notify, store.clone())?.map(Arc::new);
        Ok(Self {
            ctx: ctx.clone(),
            writer: Arc::new(writer),
            store,
            feed,
            console,
            mcp,
            notifier,
            streams,
        })
    }

    /// The incident read model this reporter keeps.
    pub fn store(&self) -> &Arc<timeline::IncidentStore> {
        &self.store
    }
}

/// Every topic the reporter mirrors to Splunk.
pub const MIRRORED_TOPICS: &[&str] = &[
    topics::ALERTS,
    topics::TELEMETRY,
    topics::DIAGNOSES,
    topics::REMEDIATIONS,
    topics::APPROVALS,
    topics::INVESTIGATIONS,
    topics::INVESTIGATION_REQUESTS,
];

impl Component for Reporter {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn routes(&self, config: &mut web::ServiceConfig) {
        if let Some(console) = &self.console {
            console.routes(config);
        }
        if let Some(mcp) = &self.mcp {
            mcp.routes(config);
        }
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move {
            let streams = self.streams.clone();
            let stop_streams = shutdown.clone();
            tokio::spawn(async move {
                stop_streams.cancelled().await;
                streams.cancel();
            });
            // Kafka is the outbox: offsets are stored only after Splunk took the batch.
            let hec = async {
                self.writer
                    .clone()
                    .run(MIRRORED_TOPICS, shutdown.clone())
                    .await
                    .map_err(BoxError::from)
            };
            let timeline = self.feed.run(&self.ctx, shutdown.clone());
            let notify = async {
                match &self.notifier {
                    Some(notifier) => notifier.run(&self.ctx, shutdown.clone()).await,
                    None => Ok(()),
                }
            };
            let result = futures::try_join!(hec, timeline, notify).map(|_| ());
            if result.is_err() {
                // One part failed: stop the others too (the application stops on the error).
                shutdown.cancel();
            }
            self.streams.cancel();
            result
        })
    }
}
