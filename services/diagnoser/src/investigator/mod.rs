//! The investigator: a bounded, tool-using agent on `[diagnoser.llm]`'s OpenAI-compatible
//! endpoint. It reads (Splunk searches through the guard, Kubernetes objects, events and
//! container states, Argo CD Applications, OpenCost allocations, runbooks, what opsmesh
//! already knows) and ends with a report whose every finding cites a tool result; it changes
//! nothing. Steps, tokens, cost and wall time are hard limits, and a repeated call ends the
//! loop.

mod budget;
mod incident;
mod kube_reads;
mod metrics;
mod queue;
mod report;
mod run;
pub mod spl_guard;
mod tools;

use std::{path::PathBuf, sync::Arc};

use prometheus::Registry;
use serde::Deserialize;

use opsmesh_proto::{
    RootCause,
    investigation::{InvestigationReport, InvestigationStep},
};
use opsmesh_runtime::{ConfigError, Validate};

use crate::llm::Endpoint;

pub use budget::Limits;
pub(crate) use incident::build;
use kube_reads::client as kube_client;
pub use kube_reads::{KUBERNETES_PERMISSIONS, LogsConfig, Permission};
pub(crate) use queue::RequestHandler;
pub use spl_guard::SplGuardConfig;
pub use tools::{ToolError, Toolbox};

/// `[diagnoser.investigator]`; off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvestigatorConfig {
    /// Investigate each new incident the rules are not confident about.
    pub enabled: bool,
    /// Rule confidence below which (or a root cause `unknown`) an incident is investigated.
    pub below_confidence: f64,
    /// Investigations run at once by one diagnoser; more requests wait on their topic
    /// (`queued`). Each holds model calls and tool reads for up to `limits.max_wall_time`.
    pub max_concurrent: usize,
    /// kubeconfig for the Kubernetes reads; unset: in-cluster, then `KUBECONFIG` /
    /// `~/.kube/config` (none of them: no Kubernetes tools).
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current one).
    pub kube_context: Option<String>,
    /// Namespaces the Kubernetes and OpenCost reads may touch (and proposals may target). A
    /// list, or comma-separated (`OPSMESH__DIAGNOSER__INVESTIGATOR__NAMESPACES=a,b`).
    #[serde(deserialize_with = "opsmesh_runtime::config::name_list")]
    pub namespaces: Vec<String>,
    /// OpenCost API base (e.g. `http://opencost.opencost:9003`); unset: no cost tool.
    pub opencost_url: Option<String>,
    pub limits: Limits,
    pub splunk: SplGuardConfig,
    pub logs: LogsConfig,
}

impl Default for InvestigatorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            below_confidence: 0.6,
            max_concurrent: 2,
            kubeconfig: None,
            kube_context: None,
            namespaces: Vec::new(),
            opencost_url: None,
            limits: Limits::default(),
            splunk: SplGuardConfig::default(),
            logs: LogsConfig::default(),
        }
    }
}

impl Validate for InvestigatorConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.below_confidence) {
            return Err(ConfigError::invalid(
                format!("{prefix}.below_confidence"),
                "must be between 0.0 and 1.0",
            ));
        }
        if self.max_concurrent == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_concurrent"),
                "must be >= 1",
            ));
        }
        if self.kube_context.is_some() && self.kubeconfig.is_none() {
            return Err(ConfigError::invalid(
                format!("{prefix}.kube_context"),
                "needs kubeconfig",
            ));
        }
        if self.enabled && self.namespaces.is_empty() {
            return Err(ConfigError::invalid(
                format!("{prefix}.namespaces"),
                "name the namespaces the investigator may read",
            ));
        }
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
        self.logs.validate(&format!("{prefix}.logs"))?;
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
    below_confidence: f64,
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
            below_confidence: config.below_confidence,
            metrics: metrics::InvestigatorMetrics::new(registry),
        }
    }

    /// Whether a diagnosis this unsure is worth an investigation.
    pub fn wanted(&self, root_cause: RootCause, confidence: f64) -> bool {
        root_cause == RootCause::Unknown || confidence < self.below_confidence
    }

    /// Runs one investigation to its end; never fails: how it ended is in the report.
    pub async fn investigate(&self, subject: &Subject) -> InvestigationReport {
        run::investigate(self, subject, None).await
    }

    /// As [`Investigator::investigate`], sending each step to `live` as soon as it is taken.
    pub async fn investigate_live(
        &self,
        subject: &Subject,
        live: tokio::sync::mpsc::UnboundedSender<InvestigationStep>,
    ) -> InvestigationReport {
        run::investigate(self, subject, Some(live)).await
    }
}

#[cfg(test)]
mod tests {
    use opsmesh_runtime::ConfigError;

    use crate::DiagnoserConfig;

    use super::*;

    /// The key a configuration is refused for.
    fn refused(adjust: impl FnOnce(&mut DiagnoserConfig)) -> String {
        let mut config = DiagnoserConfig {
            investigator: InvestigatorConfig {
                enabled: true,
                namespaces: vec!["ml-team-a".into()],
                ..InvestigatorConfig::default()
            },
            ..DiagnoserConfig::default()
        };
        adjust(&mut config);
        match config.validate("diagnoser") {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn a_bad_setting_is_named() {
        assert_eq!(
            refused(|c| c.investigator.namespaces.clear()),
            "diagnoser.investigator.namespaces"
        );
        assert_eq!(
            refused(|c| c.investigator.namespaces = vec!["Not_A_Namespace".into()]),
            "diagnoser.investigator.namespaces"
        );
        assert_eq!(
            refused(|c| c.investigator.below_confidence = 1.5),
            "diagnoser.investigator.below_confidence"
        );
        assert_eq!(
            refused(|c| c.investigator.max_concurrent = 0),
            "diagnoser.investigator.max_concurrent"
        );
        assert_eq!(
            refused(|c| c.investigator.kube_context = Some("prod".into())),
            "diagnoser.investigator.kube_context"
        );
        assert_eq!(
            refused(|c| c.investigator.opencost_url = Some("opencost:9003".into())),
            "diagnoser.investigator.opencost_url"
        );
        assert_eq!(
            refused(|c| c.investigator.limits.max_steps = 0),
            "diagnoser.investigator.limits.max_steps"
        );
        assert_eq!(
            refused(|c| c.investigator.limits.max_cost_usd = f64::NAN),
            "diagnoser.investigator.limits.max_cost_usd"
        );
        assert_eq!(
            refused(|c| c.investigator.splunk.indexes = vec!["*".into()]),
            "diagnoser.investigator.splunk.indexes"
        );
        assert_eq!(
            refused(|c| c.investigator.splunk.default_earliest = "-30d".into()),
            "diagnoser.investigator.splunk.default_earliest"
        );
        // The endpoint is checked even with the advisor off.
        assert!(!DiagnoserConfig::default().llm.enabled);
        assert_eq!(
            refused(|c| c.llm.base_url = "localhost:11434".into()),
            "diagnoser.llm.base_url"
        );
    }

    #[test]
    fn off_by_default_and_valid() {
        let config = DiagnoserConfig::default();
        assert!(!config.investigator.enabled);
        config.validate("diagnoser").unwrap();
    }
}
