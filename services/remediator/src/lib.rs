//! remediator: answers each diagnosis with governed, idempotent, verified actions on
//! Kubernetes and ArgoCD, every decision a record of the incident's hash-chained audit ledger
//! on `opsmesh.remediations.v1`.
//!
//! - [`investigation`]: an investigation's report may take up an incident the rules escalated
//!   with nothing to do; its proposals go through the same plan, and always await a human.
//! - [`plan`]: an action is planned only when the cited runbook section allows it, it cites
//!   evidence, its target is a valid name and the policy (`[remediator.policy]`) says yes;
//!   everything else is refused with the reason.
//! - [`state`]: the per-incident state machine; illegal transitions cannot be recorded.
//! - [`engine`]: the resumable per-incident procedure (intent before, result after each
//!   action; approvals; verification; rollback).
//! - [`agenda`]: incidents waiting in the background (next health check, a free action slot,
//!   a retry); the messages that brought them are settled when they come to rest.
//! - [`cluster`]: the actions through kube-rs (dry run, then apply, field manager `opsmesh`)
//!   and the ArgoCD REST API.
//! - [`ledger`]: the replica-independent view rebuilt from `opsmesh.remediations.v1`, and the
//!   chain verifier behind `opsmesh audit verify`.

pub mod agenda;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod guards;
pub mod investigation;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod state;

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    Envelope, approval::Approval, diagnosis::Diagnosis, investigation::InvestigationEvent,
    remediation::Remediation, topics,
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{
    BoxError, Component, ConfigTree, Context, Handler, HandlerError, Received, ServiceDef,
    StartError,
    bus::{PartitionBarrier, Pending, StateTopic, TopicFollower},
    secret::{self, Secret},
};

pub use config::RemediatorConfig;
use engine::Engine;

/// One Kubernetes permission: verbs on a resource of an API group (`""` is core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every Kubernetes call the remediator's actions are allowed to make. The Role in
/// `deploy/k8s/base/remediator-rbac.yaml` grants exactly this (a test compares them), and the
/// cluster simulator can enforce it, so the remediator cannot quietly need more.
pub const KUBERNETES_PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "",
        resource: "limitranges",
        verbs: &["create", "get", "patch"],
    },
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get", "list"],
    },
    Permission {
        api_group: "",
        resource: "resourcequotas",
        verbs: &["create", "get", "patch"],
    },
    Permission {
        api_group: "apps",
        resource: "replicasets",
        verbs: &["list"],
    },
    Permission {
        api_group: "serving.kserve.io",
        resource: "inferenceservices",
        verbs: &["get", "list", "patch"],
    },
];

/// How long shutdown waits for the last ledger heads to be published.
const HEADS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

pub const SERVICE: ServiceDef = ServiceDef {
    name: "remediator",
    section: "remediator",
    about: "Consumes opsmesh.diagnoses.v1, opsmesh.approvals.v1 and opsmesh.investigations.v1; acts on Kubernetes and ArgoCD under policy; publishes the audit ledger to opsmesh.remediations.v1",
    build,
};

fn start_error(message: impl Into<String>) -> StartError {
    StartError::Service {
        service: SERVICE.name.into(),
        message: message.into(),
    }
}

fn build<'a>(
    tree: &'a ConfigTree,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move {
        let config: RemediatorConfig = tree.section(SERVICE.section)?;
        Ok(Arc::new(Remediator::new(config, ctx).await?) as Arc<dyn Component>)
    })
}

/// A kube client from the configured kubeconfig, or inferred; `None` when nothing is
/// configured (cluster-changing actions then fail and escalate).
async fn kube_client(config: &RemediatorConfig) -> Result<Option<Client>, StartError> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                start_error(format!("remediator.kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| {
                    start_error(format!("remediator.kubeconfig {}: {e}", path.display()))
                })?
        }
        None => match kube::Config::infer().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes configuration (remediator.kubeconfig, in-cluster or ~/.kube/config): cluster actions will escalate");
                return Ok(None);
            }
        },
    };
    kube_config.read_timeout = Some(config.request_timeout);
    kube_config.write_timeout = Some(config.request_timeout);
    // kube's own retry layer would hold a step through an API outage (15 retries of a 503,
    // minutes) while the request timeout applies per try; the remediator retries a failed
    // step itself, with backoff, within `retry_budget`, and frees its slot in between.
    kube_config.default_retry = false;
    Client::try_from(kube_config)
        .map(Some)
        .map_err(|e| start_error(format!("Kubernetes client: {e}")))
}

pub struct Remediator {
    ctx: Context,
    engine: Arc<Engine>,
    /// The ledger's topic; not ready until it was loaded.
    ledger: StateTopic,
}

impl Remediator {
    pub async fn new(config: RemediatorConfig, ctx: &Context) -> Result<Self, StartError> {
        let library = match &config.runbooks_dir {
            Some(dir) => Library::load(dir),
            None => Library::built_in(),
        }
        .map_err(|e| start_error(e.to_string()))?;
        let kube = kube_client(&config).await?;
        let argocd = match (
            &config.argocd.url,
            Secret::load(
                &format!("{}.argocd.token", SERVICE.section),
                &config.argocd.token_source(),
                secret::trimmed,
            )?,
        ) {
            (Some(url), Some(token)) => Some((url.clone(), token)),
            (Some(_), None) => {
                return Err(start_error(
                    "remediator.argocd.url is set but no token (remediator.argocd.token or token_file)",
                ));
            }
            _ => None,
        };
        let cluster = cluster::Cluster::new(
            kube,
            argocd,
            config.field_manager.clone(),
            config.request_timeout,
        )
        .map_err(start_error)?;
        let metrics = metrics::Metrics::new(&ctx.registry);
        if config.policy.allowed_namespaces.is_empty() {
            tracing::warn!(
                "remediator.policy.allowed_namespaces is empty: actions configured auto need an approval (auto acts only in listed namespaces)"
            );
        }
        let keys = keys::Keys::load(&config, SERVICE.section)?;
        if keys.ledger.is_none() {
            tracing::warn!(
                "remediator.ledger.signing_key is not set: ledger records are hash-chained but not signed"
            );
        }
        if keys.approvals.is_none() {
            tracing::warn!(
                "remediator.approvals.verify_keys is not set: every approval will be refused"
            );
        }
        let engine = Engine::new(
            config,
            ctx.settings.cluster.clone(),
            library,
            cluster,
            ctx.publisher.clone(),
            metrics,
        )
        .with_keys(keys);
        Ok(Self {
            ctx: ctx.clone(),
            engine: Arc::new(engine),
            ledger: StateTopic::declare(&ctx.health, topics::REMEDIATIONS),
        })
    }

    /// Reads the ledger to its end, then follows it (records other replicas write too);
    /// `None` on shutdown first.
    async fn follow_ledger(&self, shutdown: &CancellationToken) -> Option<TopicFollower> {
        let engine = self.engine.clone();
        TopicFollower::start(
            self.ctx.bus().clone(),
            &self.ledger,
            &self.ctx.settings.bus.reader,
            move |message| match Envelope::<Remediation>::from_slice(&message.payload) {
                Ok(envelope) => engine.observe(&envelope),
                Err(err) => tracing::warn!(
                    partition = message.partition,
                    offset = message.offset,
                    error = %err,
                    "unreadable ledger record skipped"
                ),
            },
            shutdown,
        )
        .await
    }
}

impl Component for Remediator {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move {
            // Nothing is decided (no diagnosis, approval, sweep or agenda step) before the
            // ledger was read to its end.
            let Some(ledger) = self.follow_ledger(&shutdown).await else {
                return Ok(());
            };
            tokio::spawn(self.engine.clone().run_agenda(shutdown.clone()));
            let heads = tokio::spawn(self.engine.clone().publish_heads(shutdown.clone()));
            let engine = self.engine.clone();
            let stop = shutdown.clone();
            let sweep_every = engine.config.approvals.sweep_interval;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(sweep_every) => {}
                    }
                    if let Err(e) = engine.sweep().await {
                        tracing::warn!(error = %e, "expiring proposals");
                    }
                }
            });
            let handler = Arc::new(RemediatorHandler {
                engine: self.engine.clone(),
                ledger: PartitionBarrier::new(ledger),
            });
            let mut inputs = vec![topics::DIAGNOSES, topics::APPROVALS];
            if self.engine.config.investigations.enabled {
                inputs.push(topics::INVESTIGATIONS);
            } else {
                tracing::info!(
                    "remediator.investigations.enabled is false: investigation reports are not read"
                );
            }
            let consumed = self
                .ctx
                .consume(SERVICE.name, &inputs, handler, shutdown)
                .await;
            // The last heads, so records written just before stopping are covered too.
            if tokio::time::timeout(HEADS_DRAIN, heads).await.is_err() {
                tracing::warn!("the last ledger heads were not published in time");
            }
            consumed?;
            Ok(())
        })
    }
}

struct RemediatorHandler {
    engine: Arc<Engine>,
    /// A diagnoses, approvals or investigations partition this replica just gained is handled only once the
    /// ledger records its previous owner wrote were applied: it resumes those incidents
    /// where they stand instead of deciding them again.
    ledger: PartitionBarrier,
}

#[async_trait]
impl Handler for RemediatorHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        self.handle_or_defer(message).await.map(drop)
    }

    /// Incidents that go on in the background (verification, a wait for a slot, retries)
    /// keep their message uncommitted until they come to rest.
    async fn handle_or_defer(&self, message: &Received) -> Result<Option<Pending>, HandlerError> {
        self.ledger
            .wait(message)
            .await
            .map_err(|e| HandlerError::Transient(format!("catching up with the ledger: {e}")))?;
        match message.topic.as_str() {
            topics::DIAGNOSES => {
                let diagnosis = Envelope::<Diagnosis>::from_slice(&message.payload)
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                self.engine.on_diagnosis(&diagnosis).await
            }
            topics::APPROVALS => {
                let approval = Envelope::<Approval>::from_slice(&message.payload)
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                self.engine.on_approval(&approval).await
            }
            topics::INVESTIGATIONS => {
                let event = Envelope::<InvestigationEvent>::from_slice(&message.payload)
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                self.engine.on_investigation(&event).await
            }
            other => Err(HandlerError::Permanent(format!("unexpected topic {other}"))),
        }
    }
    fn partition_resumed(&self, topic: &str, partition: i32) {
        self.ledger.resumed(topic, partition);
    }
}
