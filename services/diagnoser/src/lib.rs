//! diagnoser: turns each alert into a diagnosis on `opsmesh.diagnoses.v1`.
//!
//! This first version records the alert itself as evidence and escalates; root-cause rules,
//! Splunk evidence, runbook retrieval and incident coalescing build on this consumer.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    ActionKind, Envelope, RootCause,
    alert::{Alert, AlertStatus},
    diagnosis::{ActionProposal, Diagnosis, Evidence, EvidenceSource},
    topics,
};
use opsmesh_runtime::{
    BoxError, Component, ConfigTree, Context, Handler, HandlerError, Received, ServiceDef,
    StartError,
};

pub const SERVICE: ServiceDef = ServiceDef {
    name: "diagnoser",
    section: "diagnoser",
    about: "Consumes opsmesh.alerts.v1 and publishes a diagnosis per incident to opsmesh.diagnoses.v1",
    build,
};

fn build<'a>(
    tree: &'a ConfigTree,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move {
        let _ = tree;
        Ok(Arc::new(Diagnoser { ctx: ctx.clone() }) as Arc<dyn Component>)
    })
}

pub struct Diagnoser {
    ctx: Context,
}

impl Component for Diagnoser {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move {
            let handler = Arc::new(AlertHandler {
                ctx: self.ctx.clone(),
            });
            self.ctx
                .consume(SERVICE.name, &[topics::ALERTS], handler, shutdown)
                .await?;
            Ok(())
        })
    }
}

struct AlertHandler {
    ctx: Context,
}

#[async_trait]
impl Handler for AlertHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let alert = Envelope::<Alert>::from_slice(&message.payload)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        if alert.payload.status == AlertStatus::Resolved {
            tracing::info!(incident = ?alert.incident_id, "resolution received; nothing to diagnose");
            return Ok(());
        }
        let diagnosis =
            Envelope::derive(&alert, "opsmesh-diagnoser", "diagnosis", diagnose(&alert));
        let key = diagnosis.incident_id.clone().unwrap_or_default();
        self.ctx
            .publisher
            .publish(&key, &diagnosis)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        tracing::info!(incident = %key, root_cause = %diagnosis.payload.root_cause, "diagnosis published");
        Ok(())
    }
}

/// The alert is the only evidence so far: cite it and hand the incident to humans.
fn diagnose(alert: &Envelope<Alert>) -> Diagnosis {
    let a = &alert.payload;
    let first_row: BTreeMap<String, serde_json::Value> = a
        .rows
        .first()
        .map(|row| {
            row.iter()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let evidence = Evidence {
        id: "ev1".into(),
        source: EvidenceSource::Alert,
        query: format!("alert {:?} sid={}", a.name, a.sid.as_deref().unwrap_or("-")),
        earliest: None,
        latest: None,
        row_count: a.rows.len() as u64,
        values: first_row,
        error: None,
    };
    let target = a.entity.target();
    Diagnosis {
        alert_ids: vec![alert.id],
        fingerprint: a.fingerprint.clone(),
        root_cause: RootCause::Unknown,
        confidence: 0.0,
        summary: format!("{}: root cause not determined from the alert alone", a.name),
        recommended_actions: vec![ActionProposal {
            kind: ActionKind::Escalate,
            target: target.clone().unwrap_or_else(|| "unknown".into()),
            params: BTreeMap::new(),
            evidence_ids: vec!["ev1".into()],
            rationale: "no rule identified a root cause; humans decide".into(),
        }],
        target,
        explanation: format!(
            "Alert {:?} fired with {} row(s) (ev1); no further evidence was gathered.",
            a.name,
            a.rows.len()
        ),
        evidence: vec![evidence],
        runbook: None,
        developer_fix: None,
        llm: Default::default(),
    }
}
