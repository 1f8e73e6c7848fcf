//! The investigator's read-only tools: what the model is told about them and how a call is
//! checked and run. A tool whose backend is not configured is not offered.

use std::sync::Arc;

use async_openai::types::chat::{ChatCompletionTool, ChatCompletionTools, FunctionObject};
use serde::Deserialize;
use serde_json::{Value, json};

use opsmesh_runbooks::Library;

use super::{
    InvestigatorConfig, Subject,
    kube_reads::{self, LogsConfig},
    spl_guard::{self, SplGuardConfig, SplRefusal},
};
use crate::{splunk::SearchError, splunk_mcp::SplunkSearcher};

pub const SPLUNK_SEARCH: &str = "splunk_search";
pub const KUBERNETES_GET: &str = "kubernetes_get";
pub const KUBERNETES_EVENTS: &str = "kubernetes_events";
pub const CONTAINER_STATES: &str = "container_states";
pub const KUBERNETES_LOGS: &str = "kubernetes_logs";
pub const RUNBOOK_SEARCH: &str = "runbook_search";
pub const OPENCOST_ALLOCATION: &str = "opencost_allocation";
pub const INCIDENT_FACTS: &str = "incident_facts";
pub const NAMES: [&str; 8] = [
    SPLUNK_SEARCH,
    KUBERNETES_GET,
    KUBERNETES_EVENTS,
    CONTAINER_STATES,
    KUBERNETES_LOGS,
    OPENCOST_ALLOCATION,
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
    #[error("OpenCost: {0}")]
    OpenCost(String),
    #[error("no result within {0:?}")]
    Timeout(std::time::Duration),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationArgs {
    namespace: String,
    /// OpenCost window (`1h`, `24h`, `7d`).
    #[serde(default)]
    window: Option<String>,
    /// `namespace`, `controller` or `pod`.
    #[serde(default)]
    aggregate: Option<String>,
}

/// The OpenCost allocation API (`GET /allocation/compute`).
struct OpenCost {
    http: reqwest::Client,
    url: String,
}

/// The backends the tools read from.
pub struct Toolbox {
    splunk: Option<SplunkSearcher>,
    guard: SplGuardConfig,
    kube: Option<kube::Client>,
    logs: LogsConfig,
    opencost: Option<OpenCost>,
    /// Namespaces Kubernetes and OpenCost reads may touch.
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
    /// Tools over these backends (`None`: that backend's tools are not offered) and OpenCost
    /// when `config` names it, limited as `config` says.
    pub fn new(
        config: &InvestigatorConfig,
        splunk: Option<SplunkSearcher>,
        kube: Option<kube::Client>,
        library: Arc<Library>,
    ) -> Result<Self, ToolError> {
        let opencost = match &config.opencost_url {
            Some(url) => Some(OpenCost {
                http: reqwest::Client::builder()
                    .timeout(config.limits.tool_timeout)
                    .build()
                    .map_err(|e| ToolError::OpenCost(e.to_string()))?,
                url: url.trim_end_matches('/').to_owned(),
            }),
            None => None,
        };
        Ok(Self {
            splunk,
            guard: config.splunk.clone(),
            kube,
            logs: config.logs.clone(),
            opencost,
            namespaces: config.namespaces.clone(),
            library,
        })
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
            specs.push(function(
                KUBERNETES_LOGS,
                format!(
                    "The last lines of one container's log (previous: its last terminated run, \
                     e.g. before an OOM kill or a crash). tail_lines defaults to {}, at most {}; \
                     at most {} bytes. container is needed when the pod has several. \
                     Namespaces: {namespaces}.",
                    self.logs.default_tail_lines, self.logs.max_tail_lines, self.logs.max_bytes
                ),
                object(
                    json!({"namespace": {"type": "string"}, "pod": {"type": "string"},
                           "container": {"type": "string"}, "previous": {"type": "boolean"},
                           "tail_lines": {"type": "integer", "minimum": 1}}),
                    &["namespace", "pod"],
                ),
            ));
        }
        if self.opencost.is_some() {
            specs.push(function(
                OPENCOST_ALLOCATION,
                format!(
                    "OpenCost allocation (cost, CPU, GPU, memory) of a namespace over a window \
                     (e.g. 1h, 24h; at most {} back), by namespace, controller or pod. \
                     Namespaces: {namespaces}.",
                    humantime::format_duration(self.guard.max_lookback)
                ),
                object(
                    json!({"namespace": {"type": "string"}, "window": {"type": "string"},
                           "aggregate": {"type": "string", "enum": ["namespace", "controller", "pod"]}}),
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
                    "source": splunk.source(),
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
            (KUBERNETES_LOGS, _, Some(client)) => {
                let args: kube_reads::LogsArgs = parse(arguments)?;
                self.allowed_namespace(&args.namespace)?;
                kube_reads::logs(client, &args, &self.logs).await
            }
            (OPENCOST_ALLOCATION, _, _) if self.opencost.is_some() => {
                let args: AllocationArgs = parse(arguments)?;
                self.allowed_namespace(&args.namespace)?;
                self.allocation(&args).await
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

    async fn allocation(&self, args: &AllocationArgs) -> Result<Value, ToolError> {
        let Some(opencost) = &self.opencost else {
            return Err(ToolError::Unknown(OPENCOST_ALLOCATION.into()));
        };
        let window = args.window.as_deref().unwrap_or("1h");
        if spl_guard::relative_lookback(&format!("-{window}"))
            .is_none_or(|back| back > self.guard.max_lookback)
        {
            return Err(ToolError::Arguments(format!(
                "window {window:?} must be a duration such as 1h or 24h, at most {}",
                humantime::format_duration(self.guard.max_lookback)
            )));
        }
        let aggregate = args.aggregate.as_deref().unwrap_or("controller");
        if !matches!(aggregate, "namespace" | "controller" | "pod") {
            return Err(ToolError::Arguments(format!(
                "aggregate {aggregate:?} must be namespace, controller or pod"
            )));
        }
        let response = opencost
            .http
            .get(format!("{}/allocation/compute", opencost.url))
            .query(&[
                ("window", window),
                ("aggregate", aggregate),
                ("accumulate", "true"),
                ("filterNamespaces", args.namespace.as_str()),
            ])
            .send()
            .await
            .map_err(|e| ToolError::OpenCost(e.to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| ToolError::OpenCost(format!("{status}: {e}")))?;
        if !status.is_success() {
            return Err(ToolError::OpenCost(format!(
                "{status}: {}",
                body["message"].as_str().unwrap_or_default()
            )));
        }
        Ok(
            json!({"namespace": args.namespace, "window": window, "aggregate": aggregate,
                  "allocations": body["data"]}),
        )
    }

    fn runbook_sections(&self, query: &str) -> Vec<Value> {
        self.library
            .search(query, 5)
            .into_iter()
            .filter_map(|(reference, score)| {
                let (runbook, section) = self.library.find(&reference)?;
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
