//! collector: reads the cluster on an interval and publishes `opsmesh.telemetry.v1`, one record
//! per resource per interval. Sources (models, policies, costs, gitops) run in parallel, each
//! bounded by its own timeout; a failing source is reported (metrics, logs, a `source_error`
//! record) and never stops the others. It uses kube-rs and reqwest against whatever the
//! configuration points at: a real cluster or the simulator alike.

mod autoscale;
mod canary;
pub mod config;
mod references;
mod scheduling;
pub mod sources;
mod storage;

use std::{sync::Arc, time::Instant};

use futures::future::BoxFuture;
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    Envelope,
    telemetry::{SourceError, Telemetry, TelemetryRecord},
};
use opsmesh_runtime::{
    BoxError, Component, ConfigTree, Context, ServiceDef, StartError,
    metrics::{latency_buckets, register},
    secret::{self, Secret},
};

pub use config::{CollectorConfig, Scope};
use sources::{BaselineCache, Costs, GitOps, Models, Policies, Records, Source};

pub const SERVICE: ServiceDef = ServiceDef {
    name: "collector",
    section: "collector",
    about: "Reads KServe, pods, Kyverno, OpenCost and ArgoCD state into opsmesh.telemetry.v1",
    build,
};

/// A Kubernetes permission the collector's code uses; deploy/k8s/collector-rbac.expected.json
/// lists the same (checked by tests/rbac.rs), and deploy/check.sh compares the rendered
/// roles with that file.
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Cluster-scoped: granted only by the ClusterRole; bound per namespace
    /// (`collector.scope = "namespaces"`) the collector does not read it.
    pub cluster_scoped: bool,
}

/// Every read the sources make: they only list.
pub const KUBERNETES_PERMISSIONS: &[Permission] = &[
    read("", "events", false),
    read("", "namespaces", true),
    read("", "pods", false),
    read("", "resourcequotas", false),
    read("apps", "replicasets", false),
    read("kyverno.io", "clusterpolicies", true),
    read("metrics.k8s.io", "pods", false),
    read("serving.kserve.io", "inferenceservices", false),
    read("wgpolicyk8s.io", "clusterpolicyreports", true),
    read("wgpolicyk8s.io", "policyreports", false),
];

const fn read(api_group: &'static str, resource: &'static str, cluster_scoped: bool) -> Permission {
    Permission {
        api_group,
        resource,
        verbs: &["list"],
        cluster_scoped,
    }
}

fn build<'a>(
    tree: &'a ConfigTree,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move {
        let config: CollectorConfig = tree.section(SERVICE.section)?;
        Ok(Arc::new(Collector::new(config, ctx).await?) as Arc<dyn Component>)
    })
}

#[derive(Clone)]
struct CollectorMetrics {
    records: IntCounterVec,
    errors: IntCounterVec,
    seconds: HistogramVec,
}

impl CollectorMetrics {
    fn new(registry: &prometheus::Registry) -> Self {
        Self {
            records: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "collector_records_total",
                        "Telemetry records published, by source",
                    ),
                    &["source"],
                )
                .expect("valid counter"),
            ),
            errors: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "collector_source_errors_total",
                        "Source reads that failed or timed out",
                    ),
                    &["source"],
                )
                .expect("valid counter"),
            ),
            seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("collector_source_seconds", "Time one source took to read")
                        .buckets(latency_buckets()),
                    &["source"],
                )
                .expect("valid histogram"),
            ),
        }
    }
}

/// The OpenCost history cache with its metrics (registered only when costs are read).
fn baseline_cache(config: &CollectorConfig, registry: &prometheus::Registry) -> BaselineCache {
    let failures = register(
        registry,
        IntCounter::new(
            "collector_opencost_history_refresh_failures_total",
            "Reads of OpenCost's allocation history (the workloads' usual sizes) that failed",
        )
        .expect("valid counter"),
    );
    let age = register(
        registry,
        Gauge::new(
            "collector_opencost_history_age_seconds",
            "Seconds since the last successful read of OpenCost's allocation history started \
             (since the collector started, before the first)",
        )
        .expect("valid gauge"),
    );
    BaselineCache::new(
        config.opencost.history_refresh,
        config.opencost.history_max_age,
        failures,
        age,
    )
}

/// What one pass produced, per source: records or the error.
#[derive(Debug, Default)]
pub struct Pass {
    pub records: Vec<(String, TelemetryRecord)>,
    pub errors: Vec<(String, String)>,
}

pub struct Collector {
    config: CollectorConfig,
    ctx: Context,
    sources: Vec<Box<dyn Source>>,
    metrics: CollectorMetrics,
}

fn start_error(message: String) -> StartError {
    StartError::Service {
        service: SERVICE.name.into(),
        message,
    }
}

/// A kube client from the configured kubeconfig, or inferred (in-cluster, then the default
/// kubeconfig). `None` when nothing is configured and nothing can be inferred.
async fn kube_client(config: &CollectorConfig) -> Result<Option<Client>, StartError> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                start_error(format!("collector.kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| start_error(format!("collector.kubeconfig {}: {e}", path.display())))?
        }
        None => match kube::Config::infer().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes configuration (collector.kubeconfig, in-cluster or ~/.kube/config): the models and policies sources are off");
                return Ok(None);
            }
        },
    };
    Client::try_from(kube_config)
        .map(Some)
        .map_err(|e| start_error(format!("Kubernetes client: {e}")))
}

impl Collector {
    pub async fn new(config: CollectorConfig, ctx: &Context) -> Result<Self, StartError> {
        let client = kube_client(&config).await?;
        let http = reqwest::Client::builder()
            .timeout(config.source_timeout)
            .user_agent("opsmesh-collector")
            .build()
            .map_err(|e| start_error(format!("HTTP client: {e}")))?;
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        let switches = &config.sources;
        let cluster_reads = config.scope == Scope::Cluster;
        if !cluster_reads {
            tracing::info!(
                namespaces = ?config.namespaces,
                "collector bound to namespaces (collector.scope = namespaces): cluster-scoped \
                 reads skipped: namespace budget annotations (collector.budgets and \
                 default_hourly_budget_usd apply), ClusterPolicyReports, Kyverno ClusterPolicies \
                 (a policy's action comes from its report)"
            );
        }
        if let Some(client) = &client {
            if switches.models {
                sources.push(Box::new(Models {
                    client: client.clone(),
                    namespaces: config.namespaces.clone(),
                    event_window: config.event_window,
                }));
            }
            if switches.policies {
                sources.push(Box::new(Policies {
                    client: client.clone(),
                    namespaces: config.namespaces.clone(),
                    cluster_reads,
                }));
            }
        }
        if let (true, Some(url)) = (switches.costs, &config.opencost.url) {
            sources.push(Box::new(Costs {
                http: http.clone(),
                url: url.clone(),
                window: config.opencost.window.clone(),
                history: config.opencost.history.clone(),
                history_step: config.opencost.history_step.clone(),
                baseline_cache: baseline_cache(&config, &ctx.registry),
                // Only for the namespaces' budget annotations, a cluster-scoped read.
                client: client.clone().filter(|_| cluster_reads),
                namespaces: config.namespaces.clone(),
                budgets: config.budgets.clone(),
                default_budget: config.default_hourly_budget_usd,
            }));
        }
        if let (true, Some(url)) = (switches.gitops, &config.argocd.url) {
            sources.push(Box::new(GitOps {
                http,
                url: url.clone(),
                token: Secret::require(
                    &format!("{}.argocd.token", SERVICE.section),
                    &config.argocd.token_source(),
                    secret::trimmed,
                )?,
                namespaces: config.namespaces.clone(),
            }));
        }
        Ok(Self {
            metrics: CollectorMetrics::new(&ctx.registry),
            ctx: ctx.clone(),
            config,
            sources,
        })
    }

    /// Names of the sources that run.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|s| s.name()).collect()
    }

    /// Reads every source once, in parallel, and publishes what they returned (and a
    /// `source_error` record for each failure).
    pub async fn collect_once(&self) -> Pass {
        let timeout = self.config.source_timeout;
        let reads = self.sources.iter().map(|source| async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, source.collect()).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {timeout:?}")),
            };
            self.metrics
                .seconds
                .with_label_values(&[source.name()])
                .observe(started.elapsed().as_secs_f64());
            (source.name(), result)
        });
        let results: Vec<(&'static str, Result<Records, String>)> =
            futures::future::join_all(reads).await;
        let mut pass = Pass::default();
        for (name, result) in results {
            match result {
                Ok(records) => {
                    self.metrics
                        .records
                        .with_label_values(&[name])
                        .inc_by(records.len() as u64);
                    pass.records.extend(records);
                }
                Err(error) => {
                    self.metrics.errors.with_label_values(&[name]).inc();
                    tracing::warn!(source = name, %error, "source failed this interval");
                    pass.records.push((
                        format!("collector/{name}"),
                        TelemetryRecord::SourceError(SourceError {
                            source: name.to_owned(),
                            error: error.clone(),
                        }),
                    ));
                    pass.errors.push((name.to_owned(), error));
                }
            }
        }
        let observed_at = chrono::Utc::now();
        let publishes = pass.records.iter().map(|(key, record)| {
            let envelope = Envelope::new(
                "opsmesh-collector",
                self.ctx.settings.cluster.clone(),
                None,
                Telemetry {
                    resource: key.clone(),
                    observed_at,
                    record: record.clone(),
                },
            );
            async move { (key, self.ctx.publisher.publish(key, &envelope).await) }
        });
        for (key, result) in futures::future::join_all(publishes).await {
            if let Err(error) = result {
                tracing::warn!(resource = %key, %error, "telemetry not published");
            }
        }
        pass
    }
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
            if self.sources.is_empty() {
                tracing::info!("collector started with no sources configured");
                shutdown.cancelled().await;
                return Ok(());
            }
            tracing::info!(interval = ?self.config.interval, sources = ?self.source_names(), "collector started");
            let mut ticker = tokio::time::interval(self.config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = ticker.tick() => {}
                }
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = self.collect_once() => {}
                }
            }
        })
    }
}
