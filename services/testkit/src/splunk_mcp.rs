//! A Splunk MCP Server test double (the Splunkbase app's `/services/mcp`): MCP over streamable
//! HTTP with rmcp, bearer token checked with Splunk's 401 body, the search tool under today's
//! name (`splunk_run_query`, beside `splunk_get_info`) or an older build's (`run_splunk_query`),
//! arguments `query`, `earliest_time`, `latest_time`, `row_limit`. Rows come from the same
//! fixture files as the REST export double ([`Fixture`]); a search with unbalanced quotes fails
//! as Splunk's parser fails it (a tool error). Every HTTP request and every search is counted.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard},
};

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::splunk_export::{Fixture, Received};

/// The search tool of the app's current builds.
pub const CURRENT_SEARCH_TOOL: &str = "splunk_run_query";
/// The search tool of older builds.
pub const OLDER_SEARCH_TOOL: &str = "run_splunk_query";
/// What the app returns when `row_limit` is not given.
const DEFAULT_ROW_LIMIT: usize = 100;

struct State {
    token: String,
    fixtures: Vec<Fixture>,
    search_tool: &'static str,
    requests: usize,
    searches: Vec<Received>,
}

#[derive(Deserialize)]
struct QueryArgs {
    query: String,
    earliest_time: Option<String>,
    latest_time: Option<String>,
    row_limit: Option<usize>,
}

#[derive(Clone)]
struct Handler {
    state: Arc<Mutex<State>>,
}

fn schema(value: Value) -> Arc<serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("a schema is an object"),
    }
}

/// Splunk refuses a search whose quotes do not close.
fn unbalanced_quotes(spl: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for c in spl.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') if quoted => escaped = true,
            (false, '"') => quoted = !quoted,
            _ => {}
        }
    }
    quoted
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let search_tool = self.state.lock().unwrap().search_tool;
        let query = schema(json!({
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "earliest_time": {"type": "string"},
                "latest_time": {"type": "string"},
                "row_limit": {"type": "integer"},
            },
            "required": ["query"],
        }));
        let mut tools = vec![Tool::new(search_tool, "Run an SPL query", query)];
        if search_tool == CURRENT_SEARCH_TOOL {
            tools.push(Tool::new(
                "splunk_get_info",
                "Splunk server information",
                schema(json!({"type": "object", "properties": {}})),
            ));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut state = self.state.lock().unwrap();
        if request.name == "splunk_get_info" && state.search_tool == CURRENT_SEARCH_TOOL {
            return Ok(CallToolResult::success(vec![ContentBlock::text(
                json!({"version": "10.0.0", "server_name": "splunk-test"}).to_string(),
            )])
            .into());
        }
        if request.name != state.search_tool {
            return Err(ErrorData::invalid_params(
                format!("tool {:?} not found", request.name),
                None,
            ));
        }
        let args: QueryArgs =
            serde_json::from_value(Value::Object(request.arguments.unwrap_or_default()))
                .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
        state.searches.push(Received {
            search: args.query.clone(),
            earliest_time: args.earliest_time,
            latest_time: args.latest_time,
        });
        if unbalanced_quotes(&args.query) {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "Error in 'search' command: Unable to parse the search: unbalanced quotes.",
            )])
            .into());
        }
        let rows: Vec<_> = state
            .fixtures
            .iter()
            .find(|f| args.query.contains(&f.matches))
            .map(|f| f.rows.clone())
            .unwrap_or_default()
            .into_iter()
            .take(args.row_limit.unwrap_or(DEFAULT_ROW_LIMIT))
            .collect();
        Ok(CallToolResult::success(vec![ContentBlock::text(
            json!({"results": rows}).to_string(),
        )])
        .into())
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn unauthorized() -> http::Response<Body> {
    let body = Full::new(Bytes::from_static(
        b"{\"messages\":[{\"type\":\"ERROR\",\"text\":\"Unauthorized\"}]}",
    ));
    http::Response::builder()
        .status(401)
        .header("Content-Type", "application/json")
        .body(BoxBody::new(body))
        .expect("a valid response")
}

pub struct SplunkMcp {
    state: Arc<Mutex<State>>,
    url: String,
}

impl SplunkMcp {
    /// Serves `fixtures` under today's tool names on a free loopback port to callers bearing
    /// `token`.
    pub async fn start(token: &str, fixtures: Vec<Fixture>) -> Self {
        Self::start_with_search_tool(token, fixtures, CURRENT_SEARCH_TOOL).await
    }

    /// As [`SplunkMcp::start`], the search tool named `search_tool` (e.g. [`OLDER_SEARCH_TOOL`]).
    pub async fn start_with_search_tool(
        token: &str,
        fixtures: Vec<Fixture>,
        search_tool: &'static str,
    ) -> Self {
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            fixtures,
            search_tool,
            requests: 0,
            searches: Vec::new(),
        }));
        let handler = Handler {
            state: state.clone(),
        };
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            .with_allowed_hosts(vec![String::from("127.0.0.1")]);
        let mcp = Arc::new(StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(NeverSessionManager::default()),
            config,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Splunk MCP test server");
        let url = format!(
            "http://{}/services/mcp",
            listener.local_addr().expect("address")
        );
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (mcp, state) = (mcp.clone(), served.clone());
                let service =
                    hyper::service::service_fn(move |request: http::Request<Incoming>| {
                        let (mcp, state) = (mcp.clone(), state.clone());
                        async move {
                            let authorized = {
                                let mut state = state.lock().unwrap();
                                state.requests += 1;
                                request
                                    .headers()
                                    .get(http::header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    == Some(&format!("Bearer {}", state.token))
                            };
                            if !authorized {
                                return Ok::<_, Infallible>(unauthorized());
                            }
                            let (parts, body) = request.into_parts();
                            let bytes = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let response = mcp
                                .handle(http::Request::from_parts(parts, Full::new(bytes)))
                                .await;
                            Ok(response.map(|b| BoxBody::new(b.map_err(|never| match never {}))))
                        }
                    });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { state, url }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The MCP endpoint URL (`…/services/mcp`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// HTTP requests received, refused ones included.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// The searches the search tool received, in order.
    pub fn searches(&self) -> Vec<Received> {
        self.lock().searches.clone()
    }
}
