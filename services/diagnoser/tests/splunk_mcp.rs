//! Splunk evidence through an MCP server speaking streamable HTTP (rmcp), as the Splunk MCP
//! Server app does: bearer token, tool discovery by `tools/list`, current and older tool names.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Bytes;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rmcp::{
    ErrorData, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig},
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use serde::Deserialize;
use serde_json::json;

use opsmesh_diagnoser::{
    splunk::{SearchError, model_search},
    splunk_mcp::{McpConfig, SplunkMcp},
};

const TOKEN: &str = "encrypted-mcp-token";

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct QueryArgs {
    query: String,
    #[allow(dead_code)]
    earliest_time: Option<String>,
    #[allow(dead_code)]
    latest_time: Option<String>,
    row_limit: Option<usize>,
}

fn rows(args: &QueryArgs) -> Result<CallToolResult, ErrorData> {
    if args.query.contains("broken") {
        return Ok(CallToolResult::error(vec![ContentBlock::text(
            "Error in 'search' command: Unable to parse the search",
        )]));
    }
    let limit = args.row_limit.unwrap_or(100).min(3);
    let results: Vec<_> = (0..limit)
        .map(|i| json!({"restarts": (7 + i).to_string(), "query_seen": args.query}))
        .collect();
    Ok(CallToolResult::success(vec![ContentBlock::text(
        json!({"results": results}).to_string(),
    )]))
}

/// Today's tool name.
#[derive(Clone)]
struct CurrentServer {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl CurrentServer {
    #[tool(description = "Run an SPL query")]
    async fn splunk_run_query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        rows(&args)
    }

    #[tool(description = "Splunk server information")]
    async fn splunk_get_info(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(
            "{\"version\":\"10.0\"}",
        )]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CurrentServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// An older build of the app.
#[derive(Clone)]
struct OlderServer {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl OlderServer {
    #[tool(description = "Run an SPL query")]
    async fn run_splunk_query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        rows(&args)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for OlderServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Serves `handler` at `/services/mcp` with bearer authentication; returns the URL.
async fn serve<H: ServerHandler + Clone + Send + Sync + 'static>(handler: H) -> String {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let mcp = mcp.clone();
            let service =
                tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let mcp = mcp.clone();
                    async move {
                        let authorized = request
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            == Some(&format!("Bearer {TOKEN}"));
                        if !authorized {
                            let body = Full::new(Bytes::from_static(
                                b"{\"messages\":[{\"type\":\"ERROR\",\"text\":\"Unauthorized\"}]}",
                            ));
                            return Ok::<_, Infallible>(
                                http::Response::builder()
                                    .status(401)
                                    .header("Content-Type", "application/json")
                                    .body(BoxBody::new(body.map_err(|never| match never {})))
                                    .unwrap(),
                            );
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
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    url
}

fn client(url: &str, token: &str) -> SplunkMcp {
    SplunkMcp::new(&McpConfig {
        url: Some(url.into()),
        token: Some(token.into()),
        timeout: Duration::from_secs(5),
        max_rows: 2,
        ..McpConfig::default()
    })
    .unwrap()
    .expect("configured")
}

#[tokio::test]
async fn the_current_search_tool_is_discovered_and_rows_bounded() {
    let url = serve(CurrentServer {
        tool_router: CurrentServer::tool_router(),
    })
    .await;
    let search = model_search("opsmesh", "-1h", "ml-team-a", "gpt-oss-120b");
    let results = client(&url, TOKEN).run(&search).await.unwrap();
    assert_eq!(results.rows.len(), 2);
    assert!(results.truncated, "3 rows offered, 2 kept");
    assert_eq!(
        results.rows[0]["query_seen"],
        search.spl.as_str(),
        "the escaped SPL reached the server"
    );
}

#[tokio::test]
async fn an_older_tool_name_is_found_too() {
    let url = serve(OlderServer {
        tool_router: OlderServer::tool_router(),
    })
    .await;
    let results = client(&url, TOKEN)
        .run(&model_search("opsmesh", "-1h", "a", "b"))
        .await
        .unwrap();
    assert_eq!(results.rows[0]["restarts"], "7");
}

#[tokio::test]
async fn tool_errors_and_bad_tokens_are_typed() {
    let url = serve(CurrentServer {
        tool_router: CurrentServer::tool_router(),
    })
    .await;
    match client(&url, TOKEN)
        .run(&model_search("opsmesh", "-1h", "a", "broken"))
        .await
    {
        Err(SearchError::Failed(message)) => {
            assert!(message.contains("Unable to parse"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let refused = client(&url, "wrong")
        .run(&model_search("opsmesh", "-1h", "a", "b"))
        .await;
    assert!(
        matches!(refused, Err(SearchError::Unreachable(_))),
        "{refused:?}"
    );
}
