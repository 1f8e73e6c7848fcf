//! One application: the HTTP server (health, metrics, service routes) plus the services'
//! background work, started together and stopped by one cancellation token with a bounded
//! drain.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::{
    App, HttpMessage, HttpResponse, HttpServer,
    dev::{Payload, Server, Service},
    http::KeepAlive,
    web,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use opsmesh_proto::envelope::HEADER_TRACEPARENT;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    body_deadline::BodyDeadline,
    bus::{Bus, BusError, Handler, Publisher, consume},
    config::{ConfigError, ConfigTree},
    health::{Health, ReadinessCheck},
    metrics::{BusMetrics, new_registry},
    settings::{HttpSettings, Settings},
    telemetry::{self, context},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a service needs from the runtime.
#[derive(Clone)]
pub struct Context {
    pub settings: Settings,
    pub registry: Registry,
    pub publisher: Publisher,
    pub bus_metrics: BusMetrics,
    pub health: Health,
}

impl Context {
    pub fn new(settings: Settings, bus: Arc<dyn Bus>) -> Self {
        let registry = new_registry();
        let bus_metrics = BusMetrics::new(&registry);
        bus.register_metrics(&registry);
        telemetry::register_metrics(&registry);
        let health = Health::default();
        health.register(Arc::new(BusReadiness(bus.clone())));
        Self {
            publisher: Publisher::new(bus, bus_metrics.clone()),
            settings,
            registry,
            bus_metrics,
            health,
        }
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        self.publisher.bus()
    }

    /// Runs `handler` in the consumer group of `service` until `shutdown` (see [`consume`]).
    pub async fn consume(
        &self,
        service: &str,
        topics: &[&str],
        handler: Arc<dyn Handler>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        consume(
            &self.publisher,
            &self.bus_metrics,
            &self.settings.bus.consumer,
            &format!("{}{service}", self.settings.bus.group_prefix),
            topics,
            handler,
            shutdown,
        )
        .await
    }
}

struct BusReadiness(Arc<dyn Bus>);

#[async_trait]
impl ReadinessCheck for BusReadiness {
    fn name(&self) -> &str {
        "bus"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.check().await.map_err(|e| e.to_string())
    }
}

/// A running part of a service: HTTP routes and background work.
pub trait Component: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Registers the component's HTTP routes (called once per HTTP worker).
    fn routes(&self, _config: &mut web::ServiceConfig) {}

    /// Background work (consumers, pollers). Returns once `shutdown` is cancelled and the work
    /// in hand is finished.
    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>>;
}

/// Builds a service's component from its configuration section.
pub type BuildFn = for<'a> fn(
    &'a ConfigTree,
    &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>>;

/// How a service is found by name and built from configuration.
pub struct ServiceDef {
    /// Name on the command line, in logs and in consumer groups (`alert-receiver`).
    pub name: &'static str,
    /// Its configuration section (`receiver`).
    pub section: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    pub build: BuildFn,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{service}: {message}")]
    Service { service: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("component {name} failed: {source}")]
    Component {
        name: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("work did not drain within the {0:?} grace period")]
    GraceExceeded(Duration),
    #[error("producer flush failed: {0}")]
    Flush(#[source] BusError),
}

/// `http.keep_alive` as actix-web takes it: `0s` turns keep-alive off.
fn keep_alive(http: &HttpSettings) -> KeepAlive {
    if http.keep_alive.is_zero() {
        KeepAlive::Disabled
    } else {
        KeepAlive::Timeout(http.keep_alive)
    }
}

/// Applies the connection limits every listener shares to an `HttpServer` and binds `addr`:
/// `(Server, bound address)`. A macro because `HttpServer`'s type parameters name a type
/// actix-web does not re-export.
macro_rules! bind {
    ($server:expr, $http:expr, $shutdown:expr, $addr:expr) => {{
        let addr: SocketAddr = $addr;
        $server
            .client_request_timeout($http.header_timeout)
            .client_disconnect_timeout($http.disconnect_timeout)
            .keep_alive(keep_alive($http))
            .max_connections($http.max_connections_per_worker)
            .disable_signals()
            .shutdown_timeout($shutdown.grace.as_secs().max(1))
            .bind(addr)
            .map_err(|source| StartError::Listen { addr, source })
            .map(|server| {
                let bound = server.addrs()[0];
                (server.run(), bound)
            })
    }};
}

pub struct Application {
    ctx: Context,
    components: Vec<Arc<dyn Component>>,
    server: Server,
    addr: SocketAddr,
    admin: Server,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the HTTP listeners (port 0 picks a free port) and prepares the components: the
    /// services' routes on `http.listen`, health and metrics on `http.admin_listen`.
    pub fn build(ctx: Context, components: Vec<Arc<dyn Component>>) -> Result<Self, StartError> {
        let http = ctx.settings.http.clone();
        let routes = components.clone();
        let body_timeout = http.body_timeout;
        let max_body_bytes = http.max_body_bytes;
        let server = HttpServer::new(move || {
            let routes = routes.clone();
            App::new()
                .app_data(web::PayloadConfig::new(max_body_bytes))
                .wrap_fn(move |mut request, service| {
                    let body = BodyDeadline::new(request.take_payload(), body_timeout);
                    request.set_payload(Payload::Stream {
                        payload: Box::pin(body),
                    });
                    service.call(request)
                })
                .wrap_fn(|request, service| {
                    // One server span per request, under the caller's span if it sent one.
                    let route = request.match_pattern();
                    let span = context::server_span(
                        request.method().as_str(),
                        route.as_deref().unwrap_or("unmatched"),
                        request
                            .headers()
                            .get(HEADER_TRACEPARENT)
                            .map(|value| value.as_bytes()),
                    );
                    let response = span.in_scope(|| service.call(request));
                    let recorded = span.clone();
                    async move {
                        let response = response.await;
                        let status = match &response {
                            Ok(response) => response.status(),
                            Err(err) => err.as_response_error().status_code(),
                        };
                        context::record_status(&recorded, status.as_u16());
                        response
                    }
                    .instrument(span)
                })
                .configure(move |config| {
                    for component in &routes {
                        component.routes(config);
                    }
                })
        })
        .workers(http.workers);
        let (server, addr) = bind!(server, &http, &ctx.settings.shutdown, http.listen)?;

        let registry = ctx.registry.clone();
        let health = ctx.health.clone();
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(registry.clone()))
                .app_data(web::Data::new(health.clone()))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics))
        })
        // Probes and scrapes: one worker is plenty, and keeps the admin side cheap.
        .workers(1);
        let (admin, admin_addr) = bind!(admin, &http, &ctx.settings.shutdown, http.admin_listen)?;
        Ok(Self {
            server,
            addr,
            admin,
            admin_addr,
            components,
            shutdown: CancellationToken::new(),
            ctx,
        })
    }

    /// The services' listener (`http.listen`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The health and metrics listener (`http.admin_listen`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Cancel it to stop the application (signals do that in `main`).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the token is cancelled or a component fails, then drains within the
    /// grace period, flushes the producer and returns.
    pub async fn run_until_stopped(self) -> Result<(), StopError> {
        let Self {
            ctx,
            components,
            server,
            addr,
            admin,
            admin_addr,
            shutdown,
        } = self;
        let grace = ctx.settings.shutdown.grace;
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        let admin_handle = admin.handle();
        let admin_task = tokio::spawn(admin);
        let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
        tracing::info!(%addr, %admin_addr, services = ?names, bus = ctx.bus().kind(), "listening");

        if ctx.settings.bus.create_topics {
            ensure_topics(&ctx, &shutdown).await;
        }
        let dlq = &ctx.settings.bus.dlq;
        let dlq_sizes = (!dlq.size_interval.is_zero()).then(|| {
            tokio::spawn(ctx.bus_metrics.dlq_sizes.clone().refresh_until(
                ctx.bus().clone(),
                dlq.clone(),
                shutdown.clone(),
            ))
        });

        let mut tasks = JoinSet::new();
        for component in &components {
            let name = component.name();
            let work = component.clone().run(shutdown.clone());
            tasks.spawn(async move { (name, work.await) });
        }

        let mut failure = None;
        tokio::select! {
            () = shutdown.cancelled() => {}
            Some(Ok((name, Err(source)))) = tasks.join_next(), if !tasks.is_empty() => {
                tracing::error!(component = name, error = %source, "component failed; stopping");
                failure = Some(StopError::Component { name, source });
                shutdown.cancel();
            }
        }

        ctx.health.start_draining();
        let started = tokio::time::Instant::now();
        let deadline = started + grace;
        let drain = async {
            let http = server_handle.stop(true);
            let work = async {
                while let Some(joined) = tasks.join_next().await {
                    match joined {
                        Ok((name, Err(error))) => {
                            tracing::error!(component = name, %error, "component failed while stopping");
                        }
                        Ok((name, Ok(()))) => tracing::debug!(component = name, "stopped"),
                        Err(error) => tracing::error!(%error, "component task panicked"),
                    }
                }
            };
            tokio::join!(http, work);
        };
        if tokio::time::timeout_at(deadline, drain).await.is_err() {
            tracing::error!(?grace, "drain exceeded the grace period");
            return Err(StopError::GraceExceeded(grace));
        }
        let _ = server_task.await;
        if let Some(refresh) = dlq_sizes {
            refresh.abort();
        }
        // Last: `/readyz` answers "draining" to the probes until the work above is done.
        admin_handle.stop(true).await;
        let _ = admin_task.await;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        ctx.bus()
            .flush(remaining.max(Duration::from_millis(100)))
            .await
            .map_err(StopError::Flush)?;
        tracing::info!(elapsed = ?started.elapsed(), "stopped cleanly");
        match failure {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

/// Creates missing topics, retrying while the bus is unreachable (the process stays live,
/// and not ready, meanwhile).
async fn ensure_topics(ctx: &Context, shutdown: &CancellationToken) {
    let topics = opsmesh_proto::topics::all_topic_names();
    for attempt in 1.. {
        let delay =
            crate::backoff::delay(Duration::from_millis(400), Duration::from_secs(5), attempt);
        match ctx.bus().ensure_topics(&topics).await {
            Ok(()) => return,
            Err(err) => tracing::warn!(error = %err, retry_in = ?delay, "cannot ensure topics yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let readiness = health.readiness().await;
    if readiness.ready {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    }
}

async fn metrics(registry: web::Data<Registry>) -> HttpResponse {
    let mut buffer = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(buffer),
        Err(err) => HttpResponse::InternalServerError().body(err.to_string()),
    }
}
