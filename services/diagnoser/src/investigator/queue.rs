//! The investigation queue's consumer: requests from `opsmesh.investigation-requests.v1` (an
//! unsure diagnosis, `opsmesh investigate`, the console, the MCP server) run here, a bounded
//! number at once, in the background of the consume loop. A request's offset is stored only
//! once its report (or the reason it could not run) was published, so a diagnoser stopped
//! mid-investigation leaves it to be run again by the next one: requests survive restarts.

use std::sync::Arc;

use async_trait::async_trait;
use prometheus::{IntCounterVec, IntGauge, Registry};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    Envelope,
    investigation::{
        InvestigationEvent, InvestigationRequest, InvestigationState, InvestigationStatus,
        InvestigationStep, InvestigationUpdate,
    },
};
use opsmesh_runtime::{
    Handler, HandlerError, Received,
    bus::{Pending, defer},
    metrics::{counter_vec, register},
};

use super::Subject;
use crate::Inner;

const SOURCE: &str = "opsmesh-diagnoser";

/// Why a request was answered `failed` without running (the `reason` label).
#[derive(Debug, Clone, Copy, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
enum Refusal {
    /// `diagnoser.investigator.enabled` is false.
    Off,
    Invalid,
    NamespaceNotAllowed,
    UnknownIncident,
}

#[derive(Clone)]
struct QueueMetrics {
    started: prometheus::IntCounter,
    refused: IntCounterVec,
    running: IntGauge,
    waiting: IntGauge,
}

impl QueueMetrics {
    fn new(registry: &Registry) -> Self {
        let refused = counter_vec(
            registry,
            "diagnoser_investigation_requests_refused_total",
            "Investigation requests answered `failed` without running, by reason (off, invalid, \
             namespace_not_allowed, unknown_incident)",
            &["reason"],
        );
        for reason in <Refusal as strum::VariantArray>::VARIANTS {
            refused.with_label_values(&[<&str>::from(*reason)]);
        }
        Self {
            started: register(
                registry,
                prometheus::IntCounter::new(
                    "diagnoser_investigation_requests_started_total",
                    "Investigation requests taken up (a restart's re-run counts again)",
                )
                .expect("valid counter"),
            ),
            refused,
            running: register(
                registry,
                IntGauge::new(
                    "diagnoser_investigations_running",
                    "Investigations running now (at most diagnoser.investigator.max_concurrent)",
                )
                .expect("valid gauge"),
            ),
            waiting: register(
                registry,
                IntGauge::new(
                    "diagnoser_investigations_waiting",
                    "Investigation requests taken from the topic and waiting for a free slot",
                )
                .expect("valid gauge"),
            ),
        }
    }
}

/// Consumes the request topic; each request runs in a task of its own.
pub(crate) struct RequestHandler {
    inner: Arc<Inner>,
    slots: Arc<Semaphore>,
    metrics: QueueMetrics,
    shutdown: CancellationToken,
}

impl RequestHandler {
    pub(crate) fn new(inner: Arc<Inner>, shutdown: CancellationToken) -> Self {
        let slots = Arc::new(Semaphore::new(inner.config.investigator.max_concurrent));
        let metrics = QueueMetrics::new(&inner.ctx.registry);
        Self {
            inner,
            slots,
            metrics,
            shutdown,
        }
    }
}

#[async_trait]
impl Handler for RequestHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        self.handle_or_defer(message).await.map(drop)
    }

    /// A request that can run is handed to a task: the handler slot is free at once, the
    /// offset waits for the report.
    async fn handle_or_defer(&self, message: &Received) -> Result<Option<Pending>, HandlerError> {
        let request = Envelope::<InvestigationRequest>::from_slice(&message.payload)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let subject = match self.subject(&request) {
            Ok(subject) => subject,
            Err((refusal, detail)) => {
                self.metrics
                    .refused
                    .with_label_values(&[<&str>::from(refusal)])
                    .inc();
                tracing::warn!(investigation = %request.payload.investigation_id, %detail, "investigation request refused");
                let status = status(&request, InvestigationState::Failed, detail);
                publish(&self.inner, &request, &question(&request), "failed", status).await?;
                return Ok(None);
            }
        };
        let (settle, pending) = defer();
        let (inner, slots, metrics) =
            (self.inner.clone(), self.slots.clone(), self.metrics.clone());
        let shutdown = self.shutdown.clone();
        let span = tracing::info_span!(
            "investigation",
            investigation = %request.payload.investigation_id,
            requested_by = %request.payload.requested_by,
        );
        let work = async move {
            metrics.waiting.inc();
            let slot = tokio::select! {
                slot = slots.acquire_owned() => slot,
                () = shutdown.cancelled() => {
                    metrics.waiting.dec();
                    return;
                }
            };
            metrics.waiting.dec();
            let Ok(_slot) = slot else { return };
            metrics.started.inc();
            metrics.running.inc();
            // Stopped mid-run, the request stays unsettled: the next diagnoser runs it again.
            let outcome = tokio::select! {
                outcome = run(&inner, &request, &subject) => Some(outcome),
                () = shutdown.cancelled() => None,
            };
            metrics.running.dec();
            match outcome {
                Some(Ok(())) => settle.settle(),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "investigation not published; it runs again after a restart")
                }
                None => tracing::info!("stopping: investigation left to run again"),
            }
        };
        tokio::spawn(tracing::Instrument::instrument(work, span));
        Ok(Some(pending))
    }
}

impl RequestHandler {
    /// What the model is asked and the facts it may cite, or why the request cannot run.
    fn subject(
        &self,
        request: &Envelope<InvestigationRequest>,
    ) -> Result<Subject, (Refusal, String)> {
        let r = &request.payload;
        if self.inner.investigator.is_none() {
            return Err((
                Refusal::Off,
                "the investigator is off in this diagnoser (diagnoser.investigator.enabled)".into(),
            ));
        }
        r.validate().map_err(|e| (Refusal::Invalid, e))?;
        let allowed = &self.inner.config.investigator.namespaces;
        if let Some(ns) = &r.namespace
            && !allowed.contains(ns)
        {
            return Err((
                Refusal::NamespaceNotAllowed,
                format!(
                    "namespace: {ns:?} is not one the investigator may read ({})",
                    allowed.join(", ")
                ),
            ));
        }
        let mut facts = r.facts.clone().unwrap_or(serde_json::Value::Null);
        let record = r
            .incident_id
            .as_deref()
            .and_then(|id| self.inner.incidents.find(id));
        if let Some(id) = &r.incident_id {
            match &record {
                Some(record) => {
                    if let serde_json::Value::Object(map) = &mut facts {
                        map.insert("incident".into(), serde_json::json!(record));
                    } else {
                        facts = serde_json::json!({"incident": record});
                    }
                }
                // The requester's own facts (an unsure diagnosis' alert and diagnosis) are
                // enough; without them an unknown id is a typo.
                None if r.facts.is_none() => {
                    return Err((
                        Refusal::UnknownIncident,
                        format!("incident_id: {id:?} is not an incident this diagnoser knows"),
                    ));
                }
                None => {}
            }
        }
        // The telemetry the collector reported about the namespace in question (the
        // request's, else the incident target's), as the tool results are: citable facts.
        let target_namespace = record
            .and_then(|record| record.target)
            .and_then(|target| target.split('/').nth(1).map(str::to_owned));
        let telemetry = r
            .namespace
            .clone()
            .or(target_namespace)
            .filter(|ns| allowed.contains(ns))
            .map(|ns| self.inner.telemetry.namespace_facts(&ns));
        if let Some(question) = &r.question {
            facts = serde_json::json!({"question": question, "known": facts});
        }
        if let (Some(telemetry), serde_json::Value::Object(map)) = (telemetry, &mut facts) {
            map.insert("telemetry".into(), telemetry);
        }
        Ok(Subject {
            incident_id: r.incident_id.clone(),
            question: question(request),
            namespace: r.namespace.clone(),
            facts,
        })
    }
}

/// The question as asked, or for an incident the standing one.
fn question(request: &Envelope<InvestigationRequest>) -> String {
    let r = &request.payload;
    match (&r.question, &r.incident_id) {
        (Some(question), _) => question.clone(),
        (None, Some(incident)) => format!(
            "Incident {incident}: why is it happening, and what should be done? Its alert, \
             diagnosis and history are in incident_facts."
        ),
        (None, None) => String::new(),
    }
}

fn status(
    request: &Envelope<InvestigationRequest>,
    state: InvestigationState,
    detail: String,
) -> InvestigationUpdate {
    InvestigationUpdate::Status(InvestigationStatus {
        state,
        requested_by: request.payload.requested_by.clone(),
        detail,
    })
}

/// Runs one request: `running`, the investigation, each step, then the report.
async fn run(
    inner: &Inner,
    request: &Envelope<InvestigationRequest>,
    subject: &Subject,
) -> Result<(), HandlerError> {
    let Some(investigator) = &inner.investigator else {
        return Ok(());
    };
    let running = status(
        request,
        InvestigationState::Running,
        format!(
            "taken up (at most {} at once, {:?} each)",
            inner.config.investigator.max_concurrent,
            inner.config.investigator.limits.max_wall_time
        ),
    );
    publish(inner, request, &subject.question, "running", running).await?;
    // Each step is published as it is taken (`opsmesh investigate --wait` shows them live);
    // the report only after every step.
    let (live, mut taken) = tokio::sync::mpsc::unbounded_channel::<InvestigationStep>();
    let publish_steps = async {
        while let Some(step) = taken.recv().await {
            let name = format!("step-{}", step.step);
            let update = InvestigationUpdate::Step(step);
            publish(inner, request, &subject.question, &name, update).await?;
        }
        Ok::<(), HandlerError>(())
    };
    let (report, steps) = tokio::join!(investigator.investigate_live(subject, live), publish_steps);
    steps?;
    tracing::info!(
        state = %report.state,
        stop = %report.stop_reason,
        root_cause = %report.root_cause,
        cost_usd = report.usage.cost_usd,
        "investigation finished"
    );
    let update = InvestigationUpdate::Report(Box::new(report));
    publish(inner, request, &subject.question, "report", update).await
}

/// Publishes one update of the request's investigation, keyed by its incident (else its id)
/// so an incident's investigation events stay in order with its other records.
async fn publish(
    inner: &Inner,
    request: &Envelope<InvestigationRequest>,
    question: &str,
    name: &str,
    update: InvestigationUpdate,
) -> Result<(), HandlerError> {
    let r = &request.payload;
    let event = InvestigationEvent {
        investigation_id: r.investigation_id.clone(),
        question: question.to_owned(),
        namespace: r.namespace.clone(),
        update,
    };
    let mut envelope = Envelope::derive(request, SOURCE, name, event);
    envelope.incident_id = r.incident_id.clone();
    let key = r.incident_id.as_deref().unwrap_or(&r.investigation_id);
    inner.publish(key, &envelope).await
}
