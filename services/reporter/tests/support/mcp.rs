//! Driving `/mcp` with rmcp's own client over streamable HTTP.

use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig},
    service::{RoleClient, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::Value;

/// A client of the MCP server at `url` sending `token` as its bearer token.
pub async fn mcp_client(url: &str, token: &str) -> RunningService<RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .expect("the MCP client connects")
}

/// Calls `tool` with `arguments` (a JSON object).
pub async fn call(
    client: &RunningService<RoleClient, ClientConfig>,
    tool: &'static str,
    arguments: Value,
) -> CallToolResult {
    let arguments = arguments.as_object().cloned().unwrap();
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .expect("the tool call completes")
}

/// The result's content as JSON text.
pub fn text(result: &CallToolResult) -> String {
    serde_json::to_string(&result.content).unwrap()
}

/// The JSON a successful tool call answered with (its first text block).
pub fn json_of(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{}", text(result));
    let content = serde_json::to_value(&result.content).unwrap();
    serde_json::from_str(content[0]["text"].as_str().expect("a text block")).unwrap()
}
