//! The investigator in the diagnoser: built from its configuration, and run for a new incident
//! the rules are not confident about, its steps and report published.

use std::sync::Arc;

use opsmesh_proto::{
    Envelope,
    alert::Alert,
    diagnosis::Diagnosis,
    incident::IncidentRecord,
    investigation::{InvestigationEvent, InvestigationUpdate},
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{ConfigError, Context, HandlerError};

use super::{Investigator, Subject, Toolbox, kube_client};
use crate::{DiagnoserConfig, Inner, llm, splunk};

/// The investigator of `[diagnoser.investigator]`: on the advisor's endpoint when there is one
/// (one hourly budget), with its own Splunk export client and Kubernetes client.
pub(crate) async fn build(
    config: &DiagnoserConfig,
    advisor: Option<&llm::Advisor>,
    library: &Arc<Library>,
    ctx: &Context,
) -> Result<Investigator, ConfigError> {
    let endpoint = match advisor {
        Some(advisor) => advisor.endpoint(),
        None => Arc::new(llm::Endpoint::new(&config.llm)?),
    };
    let splunk = splunk::SplunkClient::new(&config.splunk)
        .map_err(|e| ConfigError::invalid("diagnoser.splunk", e.to_string()))?;
    let kube = kube_client(&config.investigator).await?;
    let tools = Toolbox::new(&config.investigator, splunk, kube, library.clone())
        .map_err(|e| ConfigError::invalid("diagnoser.investigator", e.to_string()))?;
    Ok(Investigator::new(
        &config.investigator,
        endpoint,
        tools,
        &ctx.registry,
    ))
}

impl Inner {
    /// When the rules are not confident, the investigator looks further; each step, then the
    /// report, goes to `opsmesh.investigations.v1` (the reporter mirrors them to Splunk). The
    /// report is advice: its proposals are not handed to the remediator.
    pub(crate) async fn investigate(
        &self,
        alert: &Envelope<Alert>,
        record: &IncidentRecord,
        diagnosis: &Diagnosis,
    ) -> Result<(), HandlerError> {
        let Some(investigator) = &self.investigator else {
            return Ok(());
        };
        if !investigator.wanted(diagnosis.root_cause, diagnosis.confidence) {
            return Ok(());
        }
        let a = &alert.payload;
        let subject = Subject {
            incident_id: Some(record.incident_id.clone()),
            question: format!(
                "Alert {:?} about {}: the rules concluded {} at confidence {:.2} ({}). Why is it \
                 happening, and what should be done?",
                a.name,
                diagnosis.target.as_deref().unwrap_or("an unnamed target"),
                diagnosis.root_cause,
                diagnosis.confidence,
                diagnosis.summary
            ),
            namespace: a.entity.namespace.clone(),
            facts: serde_json::json!({
                "alert": {"name": a.name, "severity": a.severity, "entity": a.entity,
                          "rows": a.rows.iter().take(5).collect::<Vec<_>>()},
                "diagnosis": diagnosis,
            }),
        };
        let report = investigator.investigate(&subject).await;
        tracing::info!(
            incident = %record.incident_id,
            state = %report.state,
            stop = %report.stop_reason,
            root_cause = %report.root_cause,
            cost_usd = report.usage.cost_usd,
            "investigation finished"
        );
        let investigation_id = format!("{}/{}", record.incident_id, record.generation);
        let event = |name: String, update| {
            let mut envelope = Envelope::derive(
                alert,
                "opsmesh-diagnoser",
                &format!("investigation-{}-{name}", record.generation),
                InvestigationEvent {
                    investigation_id: investigation_id.clone(),
                    question: subject.question.clone(),
                    namespace: subject.namespace.clone(),
                    update,
                },
            );
            envelope.incident_id = Some(record.incident_id.clone());
            envelope
        };
        for step in &report.steps {
            let envelope = event(
                format!("step-{}", step.step),
                InvestigationUpdate::Step(step.clone()),
            );
            self.publish(&record.incident_id, &envelope).await?;
        }
        let envelope = event(
            "report".into(),
            InvestigationUpdate::Report(Box::new(report)),
        );
        self.publish(&record.incident_id, &envelope).await
    }
}
