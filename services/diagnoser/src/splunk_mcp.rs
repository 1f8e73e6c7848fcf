//! Evidence through the Splunk MCP Server (Splunkbase app 7931) over streamable HTTP with rmcp.
//! Tool names changed between versions, so the search tool is discovered with `tools/list`.
//! [`SplunkSearcher`] picks the REST export client or this one, as configured.

use std::{path::PathBuf, time::Duration};

use rmcp::{
    ServiceExt,
    model::CallToolRequestParams,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use opsmesh_runtime::{
    ConfigError, Validate,
    secret::{InlineSecret, Secret, SecretSource},
};

use opsmesh_proto::diagnosis::EvidenceSource;

use crate::splunk::{
    Results, Search, SearchError, SplunkClient, SplunkConfig, load_token, validate_url_and_token,
};

/// Search tools, newest names first.
pub const SEARCH_TOOLS: &[&str] = &["splunk_run_query", "run_splunk_query"];

/// `[diagnoser.splunk_mcp]`: used when set and `[diagnoser.splunk]` is not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// e.g. `https://splunk.example.com:8089/services/mcp`.
    pub url: Option<String>,
    /// The encrypted MCP token created in the app (not a REST token); prefer `token_file`,
    /// which is re-read when it changes.
    pub token: Option<InlineSecret>,
    pub token_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_rows: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            token_file: None,
            timeout: Duration::from_secs(15),
            max_rows: 1000,
        }
    }
}

impl McpConfig {
    /// `token` or `token_file`.
    pub fn token_source(&self) -> SecretSource {
        SecretSource::from_fields(self.token.as_ref(), self.token_file.as_deref(), None)
    }
}

impl Validate for McpConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        validate_url_and_token(
            prefix,
            self.url.as_deref(),
            self.token.is_some() || self.token_file.is_some(),
        )?;
        if self.max_rows == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_rows"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

pub struct SplunkMcp {
    url: String,
    /// Read at each search: a rotated token file is used without a restart.
    token: Secret<String>,
    config: McpConfig,
}

impl SplunkMcp {
    pub fn new(config: &McpConfig) -> Result<Option<Self>, SearchError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let token = load_token("diagnoser.splunk_mcp.token", &config.token_source())?;
        Ok(Some(Self {
            url: url.clone(),
            token,
            config: config.clone(),
        }))
    }

    /// Runs `search` through the server's search tool, bounded by the timeout.
    #[tracing::instrument(name = "splunk.mcp.search", skip_all, fields(otel.kind = "client", db.system.name = "splunk", db.query.text = %search.spl))]
    pub async fn run(&self, search: &Search) -> Result<Results, SearchError> {
        tokio::time::timeout(self.config.timeout, self.call(search))
            .await
            .map_err(|_| SearchError::Timeout(self.config.timeout))?
    }

    async fn call(&self, search: &Search) -> Result<Results, SearchError> {
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(self.url.clone())
                .auth_header(self.token.get().as_str()),
        );
        let client =
            ().serve(transport)
                .await
                .map_err(|e| SearchError::Unreachable(e.to_string()))?;
        let outcome = async {
            let tools = client
                .list_all_tools()
                .await
                .map_err(|e| SearchError::Unreachable(e.to_string()))?;
            let tool = SEARCH_TOOLS
                .iter()
                .find(|name| tools.iter().any(|t| t.name == **name))
                .ok_or_else(|| {
                    let offered: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
                    SearchError::Failed(format!("no search tool among {offered:?}"))
                })?;
            let arguments = json!({
                "query": search.spl,
                "earliest_time": search.earliest,
                "latest_time": "now",
                // One more than kept, so truncation shows.
                "row_limit": self.config.max_rows + 1,
            });
            let Value::Object(arguments) = arguments else {
                unreachable!("an object")
            };
            let result = client
                .call_tool(CallToolRequestParams::new(*tool).with_arguments(arguments))
                .await
                .map_err(|e| SearchError::Failed(e.to_string()))?;
            let text: Vec<&str> = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect();
            if result.is_error == Some(true) {
                return Err(SearchError::Failed(text.join(" ")));
            }
            let payload = match result.structured_content {
                Some(value) => value,
                None => serde_json::from_str(&text.join(""))
                    .map_err(|e| SearchError::Failed(format!("unreadable tool result: {e}")))?,
            };
            Ok(rows_of(payload, self.config.max_rows))
        }
        .await;
        let _ = client.cancel().await;
        outcome
    }
}

/// Where searches go, for the rules' evidence and the investigator's tool alike: the REST
/// export API (`[diagnoser.splunk]`), or the MCP server (`[diagnoser.splunk_mcp]`) when only it
/// is configured.
pub enum SplunkSearcher {
    Rest(SplunkClient),
    Mcp(SplunkMcp),
}

impl SplunkSearcher {
    /// The REST client when `rest` names a URL, else the MCP client when `mcp` does; `None`
    /// without either.
    pub fn from_config(rest: &SplunkConfig, mcp: &McpConfig) -> Result<Option<Self>, ConfigError> {
        if let Some(client) = SplunkClient::new(rest)
            .map_err(|e| ConfigError::invalid("diagnoser.splunk", e.to_string()))?
        {
            return Ok(Some(Self::Rest(client)));
        }
        Ok(SplunkMcp::new(mcp)
            .map_err(|e| ConfigError::invalid("diagnoser.splunk_mcp", e.to_string()))?
            .map(Self::Mcp))
    }

    /// Runs `search` the configured way, bounded as that way's configuration says.
    pub async fn run(&self, search: &Search) -> Result<Results, SearchError> {
        match self {
            Self::Rest(client) => client.run(search).await,
            Self::Mcp(client) => client.run(search).await,
        }
    }

    /// Which way the searches go, as evidence records it.
    pub fn source(&self) -> EvidenceSource {
        match self {
            Self::Rest(_) => EvidenceSource::SplunkSearch,
            Self::Mcp(_) => EvidenceSource::SplunkMcp,
        }
    }
}

/// Rows from `{"results": [...]}` or a bare array, bounded.
fn rows_of(payload: Value, max_rows: usize) -> Results {
    let rows: Vec<Map<String, Value>> = match payload {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("results") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
    .into_iter()
    .filter_map(|v| match v {
        Value::Object(row) => Some(row),
        _ => None,
    })
    .collect();
    let truncated = rows.len() > max_rows;
    Results {
        rows: rows.into_iter().take(max_rows).collect(),
        truncated,
        messages: Vec::new(),
    }
}
