//! The investigator's read-only tools: what the model is told about them and how a call is
//! checked and run. A tool whose backend is not configured is not offered.

use std::sync::Arc;

use async_openai::types::chat::{ChatCompletionTool, ChatCompletionTools, FunctionObject};
use serde::Deserialize;
use serde_json::{Value, json};

use opsmesh_runbooks::Library;

use super::{
    InvestigatorConfig, Subject, kube_reads,
    spl_guard::{self, SplGuardConfig, SplRefusal},
};
use crate::splunk::{SearchError, SplunkClient};

pub const SPLUNK_SEARCH: &str = "splunk_search";
pub const KUBERNETES_GET: &str = "kubernetes_get";
pub const KUBERNETES_EVENTS: &str = "kubernetes_events";
pub const CONTAINER_STATES: &str = "container_states";
pub const RUNBOOK_SEARCH: &str = "runbook_search";
pub const INCIDENT_FACTS: &str = "incident_facts";
pub const NAMES: [&str; 6] = [
    SPLUNK_SEARCH,
    KUBERNETES_GET,
    KUBERNETES_EVENTS,
    CONTAINER_STATES,
    RUNBOOK_SEARCH,
    INCIDENT_FACTS,
];

/// Why a tool call gave no result; the text goes back to the model and into the record.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("refused: {0}")]
    Spl(#[from] SplRefusal),
    #[error("refused: namespace {0:?} is not one the investigator may read (allowed: {1})")]
    Namespace(String, String),
    #[error("refused: kind {0:?} is not readable (readable: {1})")]
    Kind(String, String),
    #[error("refused: the same call was already made (result {0}); use that result")]
    Repeated(String),
    #[error("bad arguments: {0}")]
    Arguments(String),
    #[error("unknown tool {0:?}")]
    Unknown(String),
    #[error("Splunk: {0}")]
    Splunk(#[from] SearchError),
    #[error("Kubernetes: {0}")]
    Kube(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplunkArgs {
    spl: String,
    #[serde(default)]
    earliest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunbookArgs {
    query: String,
}

/// The backends the tools read from.
pub struct Toolbox {
    splunk: Option<SplunkClient>,
    guard: SplGuardConfig,
    kube: Option<kube::Client>,
    /// Namespaces Kubernetes reads may touch.
    namespaces: Vec<String>,
    library: Arc<Library>,
}

fn function(name: &str, description: String, parameters: Value) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: name.to_owned(),
            description: Some(description),
            parameters: Some(parameters),
            strict: None,
        },
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn parse<T: serde::de::DeserializeOwned>(arguments: &Value) -> Result<T, ToolError> {
    serde_json::from_value(arguments.clone()).map_err(|e| ToolError::Arguments(e.to_string()))
}

impl Toolbox {
    /// Tools over these backends (`None`: that backend's tools are not offered), limited as
    /// `config` says.
    pub fn new(
        config: &InvestigatorConfig,
        splunk: Option<SplunkClient>,
        kube: Option<kube::Client>,
        library: Arc<Library>,
    ) -> Self {
        Self {
            splunk,
            guard: config.splunk.clone(),
            kube,
            namespaces: config.namespaces.clone(),
            library,
        }
    }

    pub fn library(&self) -> &Library {
        &self.library
    }

    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The tools offered to the model.
    pub fn specs(&self) -> Vec<ChatCompletionTools> {
        let namespaces = self.namespaces.join(", ");
        let mut specs = Vec::new();
        if self.splunk.is_some() {
            specs.push(function(
                SPLUNK_SEARCH,
                format!(
                    "Run a read-only SPL search. Allowed indexes: {}. Only search, reporting and \
                     tstats/mstats commands; no subsearches or macros. The time range is \
                     `earliest` (relative, e.g. -1h, at most {} back) to now.",
                    self.guard.indexes.join(", "),
                    humantime::format_duration(self.guard.max_lookback)
                ),
                object(
                    json!({"spl": {"type": "string"}, "earliest": {"type": "string"}}),
                    &["spl"],
                ),
            ));
        }
        if self.kube.is_some() {
            specs.push(function(
                KUBERNETES_GET,
                format!(
                    "Get one Kubernetes object (with name) or list a kind. Kinds: {}. \
                     Namespaces: {namespaces}.",
                    kube_reads::kind_names()
                ),
                object(
                    json!({"kind": {"type": "string"}, "namespace": {"type": "string"},
                           "name": {"type": "string"}, "label_selector": {"type": "string"}}),
                    &["kind", "namespace"],
                ),
            ));
            specs.push(function(
                KUBERNETES_EVENTS,
                format!("Events of a namespace, or of one object in it. Namespaces: {namespaces}."),
                object(
                    json!({"namespace": {"type": "string"}, "object": {"type": "string"}}),
                    &["namespace"],
                ),
            ));
            specs.push(function(
                CONTAINER_STATES,
                format!(
                    "Containers' readiness, restart count, state and last state (termination \
                     reason, exit code) of one pod or the pods matching a label selector. \
                     Namespaces: {namespaces}."
                ),
                object(
                    json!({"namespace": {"type": "string"}, "pod": {"type": "string"},
                           "label_selector": {"type": "string"}}),
                    &["namespace"],
                ),
            ));
        }
        specs.push(function(
            RUNBOOK_SEARCH,
            "Search the runbooks; returns sections with the actions they allow.".into(),
            object(json!({"query": {"type": "string"}}), &["query"]),
        ));
        specs.push(function(
            INCIDENT_FACTS,
            "What opsmesh already knows: the incident's alert, the rules' diagnosis with its \
             evidence, and recent telemetry."
                .into(),
            object(json!({}), &[]),
        ));
        specs
    }

    fn allowed_namespace(&self, namespace: &str) -> Result<(), ToolError> {
        if self.namespaces.iter().any(|n| n == namespace) {
            Ok(())
        } else {
            Err(ToolError::Namespace(
                namespace.to_owned(),
                self.namespaces.join(", "),
            ))
        }
    }

    /// Runs one call; the result is JSON for the model.
    pub async fn call(
        &self,
        name: &str,
        arguments: &Value,
        subject: &Subject,
    ) -> Result<Value, ToolError> {
        match (name, &self.splunk, &self.kube) {
            (SPLUNK_SEARCH, Some(splunk), _) => {
                let args: SplunkArgs = parse(arguments)?;
                let search = spl_guard::check(&self.guard, &args.spl, args.earliest.as_deref())?;
                let results = splunk.run(&search).await?;
                Ok(json!({
                    "spl": search.spl,
                    "earliest": search.earliest,
                    "latest": "now",
                    "rows": results.rows,
                    "truncated": results.truncated,
                    "messages": results.messages,
                }))
            }
            (KUBERNETES_GET, _, Some(client)) => {
                let args: kube_reads::GetArgs = parse(arguments)?;
                self.allowed_namespace(&args.namespace)?;
                kube_reads::get(client, &args).await
            }
            (KUBERNETES_EVENTS, _, Some(client)) => {
                let args: kube_reads::EventsArgs = parse(arguments)?;
                self.allowed_namespace(&args.namespace)?;
                kube_reads::events(client, &args).await
            }
            (CONTAINER_STATES, _, Some(client)) => {
                let args: kube_reads::ContainersArgs = parse(arguments)?;
                self.allowed_namespace(&args.namespace)?;
                kube_reads::containers(client, &args).await
            }
            (RUNBOOK_SEARCH, _, _) => {
                let args: RunbookArgs = parse(arguments)?;
                Ok(json!({"sections": self.runbook_sections(&args.query)}))
            }
            (INCIDENT_FACTS, _, _) => Ok(json!({
                "incident_id": subject.incident_id,
                "question": subject.question,
                "namespace": subject.namespace,
                "facts": subject.facts,
            })),
            _ => Err(ToolError::Unknown(name.to_owned())),
        }
    }

    fn runbook_sections(&self, query: &str) -> Vec<Value> {
        self.library
            .search(query, 5)
            .into_iter()
            .filter_map(|(reference, score)| {
                let runbook = self
                    .library
                    .runbooks()
                    .iter()
                    .find(|r| r.front.id == reference.id)?;
                let section = runbook
                    .sections
                    .iter()
                    .find(|s| s.heading == reference.section)?;
                Some(json!({
                    "runbook": reference.id,
                    "root_causes": runbook.front.root_causes,
                    "section": reference.section,
                    "score": score,
                    "text": section.text,
                    "actions": section.spec.iter().flat_map(|s| &s.actions)
                        .map(|a| json!({"kind": a.kind, "target": a.target}))
                        .collect::<Vec<_>>(),
                }))
            })
            .collect()
    }
}
