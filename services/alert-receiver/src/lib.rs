//! alert-receiver: the mesh's only public door. An alert is answered `202` only once it is
//! durably on `opsmesh.alerts.v1`; anything else is refused with a problem body saying why.

mod auth;
pub mod config;
mod dedup;
mod failed_auth;
mod fingerprint;
mod json_depth;
mod metrics;
mod names;
mod normalize;
mod routes;
mod unusable;

use std::sync::Arc;

use futures::future::BoxFuture;
use opsmesh_runtime::{
    BoxError, Component, ConfigError, ConfigTree, Context, ServiceDef, StartError,
};
use tokio_util::sync::CancellationToken;

use auth::Authenticator;
pub use auth::{SIGNATURE_HEADER, sign};
pub use config::ReceiverConfig;
use dedup::Deliveries;
use failed_auth::FailedAuth;

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
        Ok(Arc::new(Receiver::new(config, ctx)?) as Arc<dyn Component>)
    })
}

pub struct Receiver {
    state: Arc<routes::State>,
}

impl Receiver {
    /// Loads the sources' secrets; a missing file or variable is a configuration error.
    pub fn new(config: ReceiverConfig, ctx: &Context) -> Result<Self, ConfigError> {
        // Two limits apply, and neither implies the other: the body is read up to
        // max_body_bytes, and each alert's envelope (rows re-serialized, plus the envelope's
        // fields; Alertmanager labels twice) must fit the bus, or the request is refused 413.
        match ctx.publisher.bus().max_message_bytes() {
            Some(bus_limit) => tracing::info!(
                max_body_bytes = config.max_body_bytes,
                bus_max_message_bytes = bus_limit,
                "alert size limits: request body (receiver.max_body_bytes) and each alert's \
                 message (bus.kafka.message_max_bytes); a larger alert is refused with 413"
            ),
            None => tracing::info!(
                max_body_bytes = config.max_body_bytes,
                "alert size limit: request body (receiver.max_body_bytes); the bus has none"
            ),
        }
        let metrics = metrics::ReceiverMetrics::new(&ctx.registry);
        Ok(Self {
            state: Arc::new(routes::State {
                auth: Authenticator::new(&config, metrics.table("signatures"))?,
                deliveries: Deliveries::new(
                    config.dedup_window,
                    config.dedup_capacity,
                    metrics.table("deliveries"),
                ),
                failed_auth: FailedAuth::new(
                    config.failed_auth.clone(),
                    metrics.table("failed_auth_peers"),
                ),
                metrics,
                publisher: ctx.publisher.clone(),
                cluster: ctx.settings.cluster.clone(),
                entity_fields: normalize::FieldIndex::new(&config.entity_fields),
                config,
            }),
        })
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

/// The fingerprint the receiver gives a Splunk alert body (property tests, fuzzing).
pub fn fingerprint_of_splunk_body(
    body: serde_json::Value,
) -> Result<String, opsmesh_runtime::problem::Problem> {
    let fields = normalize::FieldIndex::new(&config::EntityFields::default());
    let defaults = ReceiverConfig::default();
    let normalizer = normalize::Normalizer {
        fields: &fields,
        max_rows: defaults.max_rows,
        max_alerts: defaults.max_alerts_per_request,
        max_unusable_chars: defaults.max_unusable_value_chars,
        default_cluster: "default",
    };
    normalizer
        .splunk(&body.to_string(), "splunk")
        .map(|splunk| splunk.alert.fingerprint)
}

/// Runs every parser of untrusted input on `bytes`, and checks that the Splunk body's fast
/// and slow paths agree; for the fuzz targets. Must never panic.
pub fn parse_untrusted(bytes: &[u8]) {
    let _ = json_depth::exceeds(bytes, 32);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if json_depth::exceeds(bytes, 32).is_some() {
        return;
    }
    let fields = normalize::FieldIndex::new(&config::EntityFields::default());
    let normalizer = normalize::Normalizer {
        fields: &fields,
        max_rows: 100,
        max_alerts: 100,
        max_unusable_chars: 64,
        default_cluster: "default",
    };
    let _ = normalizer.splunk(text, "fuzz");
    normalizer.check_fast_path(text);
    let _ = normalizer.alertmanager(text, "fuzz");
    let _ = auth::parse_signature_header(text);
}

/// Parses and verifies an `X-Opsmesh-Signature` at an arbitrary clock (see the fuzz target's
/// input layout in `auth::fuzz_signature`); panics if an extreme timestamp breaks the
/// arithmetic or a correctly signed header within the window fails. For the fuzz targets.
pub fn verify_untrusted_signature(bytes: &[u8]) {
    auth::fuzz_signature(bytes);
}
