//! diagnoser: alerts into incidents, and each new incident into a diagnosis on
//! `opsmesh.diagnoses.v1` — root cause by deterministic rules over the alert and recent
//! telemetry, every claim citing its evidence, the runbook section it follows, and the actions
//! that section allows.

mod incidents;
pub mod investigator;
pub mod llm;
mod metrics;
mod policy_fixes;
pub mod rules;
pub mod splunk;
pub mod splunk_mcp;
mod tables;
pub mod telemetry;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::Utc;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    Envelope,
    alert::Alert,
    diagnosis::{Diagnosis, EvidenceSource},
    incident::IncidentRecord,
    remediation::Remediation,
    telemetry::Telemetry,
    topics,
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{
    BoxError, Component, ConfigError, ConfigTree, Context, Handler, HandlerError, Received,
    ServiceDef, StartError, Validate,
    bus::{PartitionBarrier, StateTopic, TopicFollower},
    keyed_lock::KeyedLocks,
};

use incidents::{Decision, Incidents};
use rules::{EvidenceLog, RuleSettings};
use splunk_mcp::SplunkSearcher;
use telemetry::TelemetryStore;

pub const SERVICE: ServiceDef = ServiceDef {
    name: "diagnoser",
    section: "diagnoser",
    about: "Turns opsmesh.alerts.v1 into incidents and diagnoses (opsmesh.diagnoses.v1) grounded in runbooks",
    build,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnoserConfig {
    /// Directory of runbooks (`*.md`); unset = the runbooks built into the binary.
    pub runbooks_dir: Option<PathBuf>,
    /// The quiet period after an incident closes (any outcome): alerts of its fingerprint
    /// within it attach to the closed incident; after it they open a new, linked incident.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// A different alert about the same target within this joins its open incident.
    #[serde(with = "humantime_serde")]
    pub related_window: Duration,
    /// Telemetry history kept per resource.
    #[serde(with = "humantime_serde")]
    pub telemetry_window: Duration,
    pub telemetry_per_resource: usize,
    /// Resources whose telemetry is kept; a new one beyond this drops the least recently
    /// updated (`diagnoser_table_evictions_total{table="telemetry"}`).
    pub telemetry_max_resources: usize,
    /// Incidents kept (one per fingerprint: open, and closed for the quiet period and the
    /// recurrence link). A new one beyond this drops the longest-closed; when all are open
    /// the alert is dead-lettered (`diagnoser_table_refused_total{table="incidents"}`).
    pub max_incidents: usize,
    /// The first alert after start may arrive before the telemetry consumer caught up: it
    /// waits up to this long for telemetry about its target. Later alerts never wait (a
    /// partition must not stall on targets the collector does not watch).
    #[serde(with = "humantime_serde")]
    pub telemetry_wait: Duration,
    pub rules: RuleSettings,
    pub splunk: splunk::SplunkConfig,
    /// The Splunk MCP Server, used for evidence when `[diagnoser.splunk]` has no URL.
    pub splunk_mcp: splunk_mcp::McpConfig,
    pub llm: llm::LlmConfig,
    pub investigator: investigator::InvestigatorConfig,
}

impl Default for DiagnoserConfig {
    fn default() -> Self {
        Self {
            runbooks_dir: None,
            cooldown: Duration::from_secs(30 * 60),
            related_window: Duration::from_secs(15 * 60),
            telemetry_window: Duration::from_secs(60 * 60),
            telemetry_per_resource: 240,
            telemetry_max_resources: telemetry::DEFAULT_MAX_RESOURCES,
            max_incidents: incidents::DEFAULT_MAX_INCIDENTS,
            telemetry_wait: Duration::from_secs(5),
            rules: RuleSettings::default(),
            splunk: splunk::SplunkConfig::default(),
            splunk_mcp: splunk_mcp::McpConfig::default(),
            llm: llm::LlmConfig::default(),
            investigator: investigator::InvestigatorConfig::default(),
        }
    }
}

impl Validate for DiagnoserConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (key, value) in [
            ("telemetry_per_resource", self.telemetry_per_resource),
            ("telemetry_max_resources", self.telemetry_max_resources),
            ("max_incidents", self.max_incidents),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if !(1.0..=10.0).contains(&self.rules.memory_headroom) {
            return Err(ConfigError::invalid(
                format!("{prefix}.rules.memory_headroom"),
                "must be between 1.0 and 10.0",
            ));
        }
        if opsmesh_proto::quantity::parse_bytes(&self.rules.max_memory_limit).is_err() {
            return Err(ConfigError::invalid(
                format!("{prefix}.rules.max_memory_limit"),
                "must be a Kubernetes quantity such as 16Gi",
            ));
        }
        self.splunk.validate(&format!("{prefix}.splunk"))?;
        self.splunk_mcp.validate(&format!("{prefix}.splunk_mcp"))?;
        self.llm.validate(&format!("{prefix}.llm"))?;
        if self.investigator.enabled {
            // The investigator talks to [diagnoser.llm]'s endpoint even when the advisor is off.
            self.llm.validate_endpoint(&format!("{prefix}.llm"))?;
        }
        self.investigator
            .validate(&format!("{prefix}.investigator"))
    }
}

fn build<'a>(
    tree: &'a ConfigTree,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move {
        let config: DiagnoserConfig = tree.section(SERVICE.section)?;
        let library = match &config.runbooks_dir {
            Some(dir) => Library::load(dir),
            None => Library::built_in(),
        }
        .map_err(|e| ConfigError::invalid("diagnoser.runbooks_dir", e.to_string()))?;
        tracing::info!(runbooks = library.runbooks().len(), "runbooks loaded");
        let splunk = SplunkSearcher::from_config(&config.splunk, &config.splunk_mcp)?;
        let advisor = llm::Advisor::new(&config.llm, &ctx.registry)?;
        let library = Arc::new(library);
        let investigator = match config.investigator.enabled {
            true => Some(investigator::build(&config, advisor.as_ref(), &library, ctx).await?),
            false => None,
        };
        let diagnoser = Diagnoser::new(config, library, splunk, ctx.clone())
            .with_advisor(advisor)
            .with_investigator(investigator);
        Ok(Arc::new(diagnoser) as Arc<dyn Component>)
    })
}

pub struct Diagnoser {
    inner: Arc<Inner>,
}

struct Inner {
    config: DiagnoserConfig,
    ctx: Context,
    library: Arc<Library>,
    /// The rules' evidence searches: REST export, else the MCP server.
    splunk: Option<SplunkSearcher>,
    advisor: Option<llm::Advisor>,
    investigator: Option<investigator::Investigator>,
    /// Set once the start-up wait for telemetry is over.
    telemetry_warm: std::sync::atomic::AtomicBool,
    incidents: Arc<Incidents>,
    /// Where `incidents` is kept; not ready until it was loaded.
    incident_state: StateTopic,
    /// Serialises alerts about one target (see `on_alert`).
    targets: KeyedLocks,
    telemetry: TelemetryStore,
    diagnoses: metrics::DiagnosisMetrics,
}

impl Diagnoser {
    pub fn new(
        config: DiagnoserConfig,
        library: impl Into<Arc<Library>>,
        splunk: Option<SplunkSearcher>,
        ctx: Context,
    ) -> Self {
        let metrics = tables::DiagnoserMetrics::new(&ctx.registry);
        Self {
            inner: Arc::new(Inner {
                splunk,
                advisor: None,
                investigator: None,
                telemetry_warm: std::sync::atomic::AtomicBool::new(false),
                incidents: Arc::new(Incidents::new(
                    config.cooldown,
                    config.related_window,
                    config.max_incidents,
                    metrics.table("incidents"),
                )),
                incident_state: StateTopic::declare(&ctx.health, topics::INCIDENTS),
                targets: KeyedLocks::default(),
                diagnoses: metrics::DiagnosisMetrics::new(&ctx.registry),
                telemetry: TelemetryStore::new(
                    config.telemetry_window,
                    config.telemetry_per_resource,
                )
                .with_capacity(config.telemetry_max_resources, metrics.table("telemetry")),
                config,
                ctx,
                library: library.into(),
            }),
        }
    }
}

impl Diagnoser {
    /// Adds the optional LLM advisor (before the service runs).
    pub fn with_advisor(mut self, advisor: Option<llm::Advisor>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.advisor = advisor;
        }
        self
    }
}

impl Diagnoser {
    /// Adds the investigator (before the service runs).
    pub fn with_investigator(mut self, investigator: Option<investigator::Investigator>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.investigator = investigator;
        }
        self
    }
}

impl Component for Diagnoser {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            // Alerts are handled against the whole incident state, kept current with what
            // other replicas record; nothing is consumed before it was read to its end.
            let Some(state) = inner.follow_state(&shutdown).await else {
                return Ok(());
            };
            // Every replica keeps all telemetry and outcomes (groups of its own); alerts are
            // shared out by partition in the diagnoser group.
            let instance = uuid::Uuid::now_v7().simple().to_string();
            let ctx = &inner.ctx;
            let telemetry_group = format!("{}-telemetry-{instance}", SERVICE.name);
            let outcomes_group = format!("{}-outcomes-{instance}", SERVICE.name);
            let investigator_group = format!("{}-investigator", SERVICE.name);
            let requests = Arc::new(investigator::RequestHandler::new(
                inner.clone(),
                shutdown.clone(),
            ));
            let (a, t, o, r) = tokio::join!(
                ctx.consume(
                    SERVICE.name,
                    &[topics::ALERTS],
                    Arc::new(AlertHandler {
                        inner: inner.clone(),
                        state: PartitionBarrier::new(state),
                    }),
                    shutdown.clone()
                ),
                ctx.consume(
                    &telemetry_group,
                    &[topics::TELEMETRY],
                    Arc::new(TelemetryHandler(inner.clone())),
                    shutdown.clone()
                ),
                ctx.consume(
                    &outcomes_group,
                    &[topics::REMEDIATIONS],
                    Arc::new(OutcomeHandler(inner.clone())),
                    shutdown.clone()
                ),
                // Shared out by partition like alerts: each request runs on one replica.
                ctx.consume(
                    &investigator_group,
                    &[topics::INVESTIGATION_REQUESTS],
                    requests,
                    shutdown.clone()
                ),
            );
            a?;
            t?;
            o?;
            r?;
            Ok(())
        })
    }
}

impl Inner {
    /// Reads the incident state from the compacted topic to its end, then follows it; `None`
    /// on shutdown first.
    async fn follow_state(&self, shutdown: &CancellationToken) -> Option<TopicFollower> {
        let incidents = self.incidents.clone();
        let follower = TopicFollower::start(
            self.ctx.bus().clone(),
            &self.incident_state,
            &self.ctx.settings.bus.reader,
            move |message| match Envelope::<IncidentRecord>::from_slice(&message.payload) {
                Ok(envelope) => incidents.restore(envelope.payload),
                Err(err) => tracing::warn!(
                    partition = message.partition,
                    offset = message.offset,
                    error = %err,
                    "unreadable incident record skipped"
                ),
            },
            shutdown,
        )
        .await?;
        tracing::info!(incidents = self.incidents.count(), "incident state loaded");
        Some(follower)
    }

    async fn publish<P: opsmesh_proto::Payload>(
        &self,
        key: &str,
        envelope: &Envelope<P>,
    ) -> Result<(), HandlerError> {
        self.ctx
            .publisher
            .publish(key, envelope)
            .await
            .map(|_| ())
            .map_err(|e| HandlerError::Transient(e.to_string()))
    }

    async fn on_alert(&self, alert: Envelope<Alert>) -> Result<(), HandlerError> {
        // Alerts of one fingerprint arrive in order (it is their key); alerts of different
        // fingerprints about the same target are handled concurrently, and must not both
        // open an incident: deciding and recording is one step per target.
        let target = match alert.payload.entity.target() {
            Some(target) => Some(self.targets.lock(&target).await),
            None => None,
        };
        let now = incidents::alert_time(&alert.payload);
        let (record, opened) = match self.incidents.on_alert(alert.id, &alert.payload, now) {
            Decision::Ignore => return Ok(()),
            Decision::Full => {
                return Err(HandlerError::Permanent(format!(
                    "incident table full: {} open incidents (diagnoser.max_incidents); \
                     alert {} not taken in",
                    self.config.max_incidents, alert.id
                )));
            }
            Decision::Attach(record) | Decision::Clear(record) => (record, None),
            Decision::Open(record) => {
                let started = Instant::now();
                let diagnosis = self.diagnose(&alert, &record).await;
                let mut envelope = Envelope::derive(
                    &alert,
                    "opsmesh-diagnoser",
                    &format!("diagnosis-{}", record.generation),
                    diagnosis,
                );
                envelope.incident_id = Some(record.incident_id.clone());
                // The diagnosis first: if we stop before recording the incident, the
                // redelivered alert opens it again and re-publishes the same diagnosis id.
                self.publish(&record.incident_id, &envelope).await?;
                self.diagnoses
                    .published(envelope.payload.root_cause, started.elapsed());
                tracing::info!(
                    incident = %record.incident_id,
                    recurrence_of = ?record.recurrence_of,
                    root_cause = %envelope.payload.root_cause,
                    runbook = ?envelope.payload.runbook.as_ref().map(|r| &r.id),
                    "diagnosis published"
                );
                // Known as open before its record is published: the remediator may answer
                // the diagnosis (an escalation takes milliseconds) before that publish
                // returns, and an outcome for an incident not yet known would be lost. If the
                // record's publish fails, the redelivered alert opens the same incident again.
                self.incidents.apply(record.clone());
                (record, Some(envelope.payload))
            }
        };
        let mut state = Envelope::derive(&alert, "opsmesh-diagnoser", "incident", record.clone());
        state.incident_id = Some(record.incident_id.clone());
        self.publish(&record.fingerprint, &state).await?;
        self.incidents.apply(record.clone());
        // Only once the incident is recorded (an outcome arriving meanwhile finds it and an
        // on-demand request for it finds its record); the investigation runs off this path.
        drop(target);
        if let Some(diagnosis) = opened {
            self.request_investigation(&alert, &record, &diagnosis)
                .await?;
        }
        Ok(())
    }

    /// Splunk searches about the alert's entity, each recorded as evidence (failures too:
    /// Splunk being down degrades the diagnosis to telemetry, it never stops it).
    async fn splunk_evidence(&self, alert: &Alert, log: &mut EvidenceLog) -> Vec<String> {
        let Some(splunk) = &self.splunk else {
            return Vec::new();
        };
        let (index, earliest) = (&self.config.splunk.index, &self.config.splunk.earliest);
        let e = &alert.entity;
        let namespace = e.namespace.as_deref().unwrap_or_default();
        let searches = match (&e.policy, &e.application, e.kind, &e.name) {
            (Some(policy), _, _, _) => {
                vec![splunk::policy_search(index, earliest, namespace, policy)]
            }
            (None, Some(app), _, _) => vec![splunk::application_search(index, earliest, app)],
            (None, None, Some(opsmesh_proto::alert::EntityKind::Inferenceservice), Some(name)) => {
                vec![splunk::model_search(index, earliest, namespace, name)]
            }
            _ if !namespace.is_empty() => vec![splunk::cost_search(index, earliest, namespace)],
            _ => Vec::new(),
        };
        let mut notes = Vec::new();
        for search in searches {
            let outcome = splunk.run(&search).await;
            let mut evidence = opsmesh_proto::diagnosis::Evidence {
                id: String::new(),
                source: splunk.source(),
                query: search.spl.clone(),
                earliest: Some(search.earliest.clone()),
                latest: Some("now".into()),
                row_count: 0,
                values: BTreeMap::new(),
                error: None,
            };
            match outcome {
                Ok(results) => {
                    evidence.row_count = results.rows.len() as u64;
                    if let Some(first) = results.rows.first() {
                        evidence.values = first.clone().into_iter().collect();
                    }
                    let id = log.push(evidence);
                    notes.push(format!(
                        "Splunk returned {} row(s) ({id}).",
                        results.rows.len()
                    ));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "Splunk evidence unavailable; using telemetry");
                    evidence.error = Some(err.to_string());
                    let id = log.push(evidence);
                    notes.push(format!(
                        "Splunk evidence unavailable ({err}; {id}): decided from telemetry."
                    ));
                }
            }
        }
        notes
    }

    async fn diagnose(&self, alert: &Envelope<Alert>, record: &IncidentRecord) -> Diagnosis {
        let a = &alert.payload;
        if !self
            .telemetry_warm
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let deadline = tokio::time::Instant::now() + self.config.telemetry_wait;
            while !self.telemetry.knows(&a.entity) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.telemetry_warm
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut log = EvidenceLog::default();
        let first_row: BTreeMap<String, serde_json::Value> = a
            .rows
            .first()
            .map(|row| {
                row.iter()
                    .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let alert_ev = log.add(
            EvidenceSource::Alert,
            format!(
                "{} alert {:?} sid={}",
                a.source,
                a.name,
                a.sid.as_deref().unwrap_or("-")
            ),
            a.rows.len() as u64,
            first_row,
        );
        let splunk_notes = self.splunk_evidence(a, &mut log).await;
        let mut finding = rules::diagnose(
            a,
            &alert_ev,
            &self.telemetry,
            &self.config.rules,
            log,
            Utc::now(),
        );
        incidents::shape_recurrence(&mut finding, record, &alert_ev);
        let preferred = finding.actions.first().map(|p| p.kind);
        let retrieved = self
            .library
            .retrieve(finding.root_cause, &a.name, &finding.query, preferred)
            .or_else(|| {
                self.library
                    .retrieve(finding.root_cause, &a.name, &finding.query, None)
            });
        let mut explanation = finding.explanation.clone();
        for note in splunk_notes {
            explanation.push(' ');
            explanation.push_str(&note);
        }
        let (runbook, actions) = match &retrieved {
            Some(hit) => {
                let allowed: Vec<_> = hit
                    .section
                    .spec
                    .as_ref()
                    .map(|spec| spec.actions.iter().map(|a| a.kind).collect())
                    .unwrap_or_default();
                let (kept, dropped): (Vec<_>, Vec<_>) = finding
                    .actions
                    .iter()
                    .cloned()
                    .partition(|p| allowed.contains(&p.kind));
                explanation.push_str(&format!(
                    " Runbook {} v{} section {:?} ({}).",
                    hit.runbook.front.id, hit.runbook.front.version, hit.section.heading, hit.why
                ));
                for action in dropped {
                    explanation.push_str(&format!(
                        " {} is not allowed by that section and is not recommended.",
                        action.kind
                    ));
                }
                (Some(hit.runbook.reference(hit.section)), kept)
            }
            None if finding.root_cause == opsmesh_proto::RootCause::None => (None, Vec::new()),
            None => {
                explanation.push_str(" No runbook section matches: no action can be recommended.");
                (None, Vec::new())
            }
        };
        let mut actions = actions;
        let advice = match (&self.advisor, &retrieved) {
            (Some(advisor), Some(hit)) => {
                let allowed: Vec<_> = hit
                    .section
                    .spec
                    .iter()
                    .flat_map(|s| s.actions.iter().map(|a| a.kind))
                    .collect();
                let may_choose = finding.confidence < self.config.llm.choose_below_confidence;
                let mut advice = advisor
                    .advise(&finding.summary, &finding.evidence, &allowed, may_choose)
                    .await;
                if let Some(kind) = advice.chosen_action {
                    match actions.iter().position(|a| a.kind == kind) {
                        Some(at) => {
                            let chosen = actions.remove(at);
                            explanation.push_str(&format!(" Rules not confident: the LLM chose {kind} among the allowed actions."));
                            actions.insert(0, chosen);
                        }
                        None => advice.usage.discarded.push(format!(
                            "discarded choice: {kind} has no parameters from the rules"
                        )),
                    }
                }
                advice
            }
            _ => llm::Advice::default(),
        };
        Diagnosis {
            narrative: advice.narrative,
            alert_ids: vec![alert.id],
            fingerprint: record.fingerprint.clone(),
            root_cause: finding.root_cause,
            confidence: finding.confidence,
            target: finding.target,
            summary: finding.summary,
            evidence: finding.evidence,
            runbook,
            recommended_actions: actions,
            explanation,
            developer_fix: finding.developer_fix,
            llm: advice.usage,
        }
    }
}

struct AlertHandler {
    inner: Arc<Inner>,
    /// A partition this replica just gained is handled only once the incidents its previous
    /// owner recorded were applied: its next alert joins them instead of opening new ones.
    state: PartitionBarrier,
}

#[async_trait]
impl Handler for AlertHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let alert = Envelope::<Alert>::from_slice(&message.payload)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        self.state
            .wait(message)
            .await
            .map_err(|e| HandlerError::Transient(format!("catching up with incidents: {e}")))?;
        self.inner.on_alert(alert).await
    }

    fn partition_resumed(&self, topic: &str, partition: i32) {
        self.state.resumed(topic, partition);
    }
}

struct TelemetryHandler(Arc<Inner>);

#[async_trait]
impl Handler for TelemetryHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let telemetry = Envelope::<Telemetry>::from_slice(&message.payload)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        self.0.telemetry.record(telemetry.payload);
        Ok(())
    }
}

/// Closes incidents with the remediator's terminal state as their outcome, so later alerts of
/// the same fingerprint attach during the quiet period and open a linked incident after it.
struct OutcomeHandler(Arc<Inner>);

#[async_trait]
impl Handler for OutcomeHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let outcome = Envelope::<Remediation>::from_slice(&message.payload)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let Some(incident) = outcome.incident_id.as_deref() else {
            return Ok(());
        };
        // The time the remediator recorded, not when we read it: a replayed ledger closes at
        // the same instant as the first time.
        let Some(record) =
            self.0
                .incidents
                .close(incident, outcome.payload.state, outcome.occurred_at)
        else {
            return Ok(());
        };
        let mut state = Envelope::derive(
            &outcome,
            "opsmesh-diagnoser",
            "incident-closed",
            record.clone(),
        );
        state.incident_id = Some(record.incident_id.clone());
        self.0.publish(&record.fingerprint, &state).await?;
        tracing::info!(incident = %record.incident_id, outcome = %record.status, "incident closed");
        self.0.incidents.apply(record);
        Ok(())
    }
}
