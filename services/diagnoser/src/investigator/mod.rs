//! The investigator: a bounded, tool-using agent on `[diagnoser.llm]`'s OpenAI-compatible
//! endpoint. It reads (Splunk searches through the guard, Kubernetes objects, events and
//! container states, Argo CD Applications, OpenCost allocations, runbooks, what opsmesh
//! already knows) and ends with a report whose every finding cites a tool result; it changes
//! nothing. Steps, tokens, cost and wall time are hard limits, and a repeated call ends the
//! loop.

mod budget;
mod kube_reads;
mod metrics;
mod report;
mod run;
pub mod spl_guard;
mod tools;

use std::sync::Arc;

use prometheus::Registry;
use serde::Deserialize;

use opsmesh_proto::investigation::InvestigationReport;
use opsmesh_runtime::{ConfigError, Validate};

use crate::llm::Endpoint;

pub use budget::Limits;
pub use spl_guard::SplGuardConfig;
pub use tools::{ToolError, Toolbox};

/// `[diagnoser.investigator]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvestigatorConfig {
    /// Namespaces the Kubernetes and OpenCost reads may touch (and proposals may target).
    pub namespaces: Vec<String>,
    /// OpenCost API base (e.g. `http://opencost.opencost:9003`); unset: no cost tool.
    pub opencost_url: Option<String>,
    pub limits: Limits,
    pub splunk: SplGuardConfig,
}

impl Validate for InvestigatorConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(bad) = self
            .namespaces
            .iter()
            .find(|n| !opsmesh_proto::name::is_dns_label(n))
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.namespaces"),
                format!("{bad:?} is not a namespace name"),
            ));
        }
        if let Some(url) = &self.opencost_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.opencost_url"),
                "must be an http(s) URL",
            ));
        }
        self.limits.validate(&format!("{prefix}.limits"))?;
        self.splunk.validate(&format!("{prefix}.splunk"))
    }
}

/// What to investigate.
#[derive(Debug, Clone)]
pub struct Subject {
    pub incident_id: Option<String>,
    /// The question the model is asked (for an incident: why it happened and what to do).
    pub question: String,
    pub namespace: Option<String>,
    /// What opsmesh already knows (the alert, the rules' diagnosis, recent telemetry), served
    /// by the `incident_facts` tool and citable like any tool result.
    pub facts: serde_json::Value,
}

pub struct Investigator {
    endpoint: Arc<Endpoint>,
    tools: Toolbox,
    limits: Limits,
    metrics: metrics::InvestigatorMetrics,
}

impl Investigator {
    /// An investigator on `endpoint` (shared with the advisor: one hourly budget), its metrics
    /// registered in `registry`.
    pub fn new(
        config: &InvestigatorConfig,
        endpoint: Arc<Endpoint>,
        tools: Toolbox,
        registry: &Registry,
    ) -> Self {
        Self {
            endpoint,
            tools,
            limits: config.limits.clone(),
            metrics: metrics::InvestigatorMetrics::new(registry),
        }
    }

    /// Runs one investigation to its end; never fails: how it ended is in the report.
    pub async fn investigate(&self, subject: &Subject) -> InvestigationReport {
        run::investigate(self, subject).await
    }
}
