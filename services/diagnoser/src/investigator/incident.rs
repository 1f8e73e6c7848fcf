//! The investigator in the diagnoser: built from its configuration, and queued for a new
//! incident the rules are not confident about.

use std::sync::Arc;

use opsmesh_proto::{
    Envelope, alert::Alert, diagnosis::Diagnosis, incident::IncidentRecord,
    investigation::InvestigationRequest,
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{ConfigError, Context, HandlerError};

use super::{Investigator, Toolbox, kube_client};
use crate::{DiagnoserConfig, Inner, llm, splunk_mcp::SplunkSearcher};

/// The investigator of `[diagnoser.investigator]`: on the advisor's endpoint when there is one
/// (one hourly budget), with its own Splunk client (REST export, else MCP) and Kubernetes client.
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
    let splunk = SplunkSearcher::from_config(&config.splunk, &config.splunk_mcp)?;
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
    /// When the rules are not confident, an investigation is queued on
    /// `opsmesh.investigation-requests.v1` (the queue consumer runs it, bounded, off the alert's
    /// partition; a restart does not lose it). Its report is advice for humans and, for the
    /// remediator, proposals a human approves.
    pub(crate) async fn request_investigation(
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
        let request = InvestigationRequest {
            investigation_id: format!("{}/{}", record.incident_id, record.generation),
            incident_id: Some(record.incident_id.clone()),
            question: Some(format!(
                "Alert {:?} about {}: the rules concluded {} at confidence {:.2} ({}). Why is it \
                 happening, and what should be done?",
                a.name,
                diagnosis.target.as_deref().unwrap_or("an unnamed target"),
                diagnosis.root_cause,
                diagnosis.confidence,
                diagnosis.summary
            )),
            namespace: a
                .entity
                .namespace
                .clone()
                .filter(|ns| self.config.investigator.namespaces.contains(ns)),
            requested_by: "diagnoser".into(),
            facts: Some(serde_json::json!({
                "alert": {"name": a.name, "severity": a.severity, "entity": a.entity,
                          "rows": a.rows.iter().take(5).collect::<Vec<_>>()},
                "diagnosis": diagnosis,
            })),
        };
        let mut envelope = Envelope::derive(
            alert,
            "opsmesh-diagnoser",
            &format!("investigation-request-{}", record.generation),
            request,
        );
        envelope.incident_id = Some(record.incident_id.clone());
        let key = envelope.payload.investigation_id.clone();
        self.publish(&key, &envelope).await?;
        tracing::info!(incident = %record.incident_id, investigation = %key, "investigation queued");
        Ok(())
    }
}
