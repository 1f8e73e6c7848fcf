//! Process entry points: a service binary's whole `main`, and the pieces `opsmesh` combines.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::Parser;

use crate::{
    app::{Application, Component, Context, ServiceDef, StartError},
    bus::{self, Bus},
    config::ConfigTree,
    settings::Settings,
    shutdown, telemetry,
};

/// Builds the named services into one application on `bus` (or the configured bus).
pub async fn build(
    tree: &ConfigTree,
    settings: Settings,
    services: &[&ServiceDef],
    bus: Option<Arc<dyn Bus>>,
) -> Result<Application, StartError> {
    let client_id = services
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join("+");
    let bus = match bus {
        Some(bus) => bus,
        None => bus::connect(&settings.bus, &format!("opsmesh-{client_id}"))?,
    };
    let ctx = Context::new(settings, bus);
    let mut components: Vec<Arc<dyn Component>> = Vec::with_capacity(services.len());
    for service in services {
        components.push((service.build)(tree, &ctx).await?);
    }
    Application::build(ctx, components)
}

/// Runs an application on a fresh Tokio runtime until SIGTERM/SIGINT; the exit code says
/// whether it started and drained cleanly.
pub fn run_to_exit(
    tree: ConfigTree,
    services: Vec<&'static ServiceDef>,
    bus: Option<Arc<dyn Bus>>,
) -> ExitCode {
    let settings = match tree.settings() {
        Ok(settings) => settings,
        Err(err) => return fail(&err),
    };
    let service_name = match services.as_slice() {
        [service] => format!("opsmesh-{}", service.name),
        _ => "opsmesh".to_owned(),
    };
    let tracing = match telemetry::init_service(&settings, &service_name) {
        Ok(tracing) => tracing,
        Err(err) => return fail(&err),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err),
    };
    runtime.block_on(async move {
        let app = match build(&tree, settings, &services, bus).await {
            Ok(app) => app,
            Err(err) => return fail(&err),
        };
        shutdown::cancel_on_signal(app.shutdown_token());
        let stopped = app.run_until_stopped().await;
        // After the drain: the spans of the last messages handled go out too.
        tracing.shutdown().await;
        match stopped {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&err),
        }
    })
}

/// Prints the error for the operator and returns a failing exit code.
pub fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{err}");
    eprintln!("error: {err}");
    ExitCode::FAILURE
}

#[derive(Debug, Parser)]
struct ServiceArgs {
    /// TOML configuration file; `OPSMESH__SECTION__KEY` environment variables override it.
    #[arg(long, short, env = "OPSMESH_CONFIG")]
    config: Option<PathBuf>,
}

/// The whole `main` of a single-service binary.
pub fn service_main(service: &'static ServiceDef) -> ExitCode {
    let args = ServiceArgs::command_for(service).get_matches();
    let config: Option<PathBuf> = args.get_one::<PathBuf>("config").cloned();
    let tree = match ConfigTree::load(config.as_deref()) {
        Ok(tree) => tree,
        Err(err) => return fail(&err),
    };
    run_to_exit(tree, vec![service], None)
}

impl ServiceArgs {
    fn command_for(service: &ServiceDef) -> clap::Command {
        use clap::CommandFactory;
        Self::command()
            .name(format!("opsmesh-{}", service.name))
            .about(service.about)
            .after_help(format!(
                "Runs the {} service against Kafka (bus.kafka.brokers). Configuration: built-in \
                 defaults, then --config FILE, then OPSMESH__SECTION__KEY environment variables \
                 (this service's section is [{}]). Serves /healthz, /readyz and /metrics on \
                 http.listen. SIGTERM drains in-flight work within shutdown.grace and exits 0.",
                service.name, service.section
            ))
    }
}
