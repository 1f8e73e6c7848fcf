//! alert-receiver: the mesh's only public door. An alert is answered `202` only once it is
//! durably on `opsmesh.alerts.v1`; anything else is refused with a problem body saying why.

pub mod config;
mod fingerprint;
mod json_depth;
mod metrics;
mod names;
mod normalize;
mod routes;

use std::sync::Arc;

use futures::future::BoxFuture;
use opsmesh_runtime::{BoxError, Component, ConfigTree, Context, ServiceDef, StartError};
use tokio_util::sync::CancellationToken;

pub use config::ReceiverConfig;

pub const SERVICE: ServiceDef = ServiceDef {
    name: "alert-receiver",
    section: "receiver",
    about: "Accepts Splunk and Alertmanager alerts over HTTP and publishes them to opsmesh.alerts.v1",
    build,
};

fn build<'a>(
    tree: &'a ConfigTree,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move {
        let config: ReceiverConfig = tree.section(SERVICE.section)?;
        Ok(Arc::new(Receiver::new(config, ctx)) as Arc<dyn Component>)
    })
}

pub struct Receiver {
    state: Arc<routes::State>,
}

impl Receiver {
    pub fn new(config: ReceiverConfig, ctx: &Context) -> Self {
        Self {
            state: Arc::new(routes::State {
                metrics: metrics::ReceiverMetrics::new(&ctx.registry),
                publisher: ctx.publisher.clone(),
                cluster: ctx.settings.cluster.clone(),
                config,
            }),
        }
    }
}

impl Component for Receiver {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn routes(&self, config: &mut actix_web::web::ServiceConfig) {
        routes::configure(config, self.state.clone());
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        // All of the receiver's work happens in HTTP requests, which the server drains.
        Box::pin(async move {
            shutdown.cancelled().await;
            Ok(())
        })
    }
}
