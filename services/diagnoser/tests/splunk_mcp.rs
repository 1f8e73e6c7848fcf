//! Splunk evidence through an MCP server speaking streamable HTTP (rmcp), as the Splunk MCP
//! Server app does (the test kit's double): bearer token, tool discovery by `tools/list`,
//! current and older tool names.

use std::time::Duration;

use serde_json::{Map, Value, json};

use opsmesh_diagnoser::{
    splunk::{Search, SearchError, model_search},
    splunk_mcp::{McpConfig, SplunkMcp},
};
use opsmesh_testkit::{
    splunk_export::Fixture,
    splunk_mcp::{self, OLDER_SEARCH_TOOL},
};

const TOKEN: &str = "encrypted-mcp-token";

/// Three rows for any models search.
fn fixtures() -> Vec<Fixture> {
    let rows = (7..10)
        .map(|restarts| match json!({"restarts": restarts.to_string()}) {
            Value::Object(row) => row,
            _ => Map::new(),
        })
        .collect();
    vec![Fixture {
        matches: "sourcetype=\"opsmesh:models\"".into(),
        rows,
    }]
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
    let server = splunk_mcp::SplunkMcp::start(TOKEN, fixtures()).await;
    let search = model_search("opsmesh", "-1h", "ml-team-a", "gpt-oss-120b");
    let results = client(server.url(), TOKEN).run(&search).await.unwrap();
    assert_eq!(results.rows.len(), 2);
    assert!(results.truncated, "3 rows offered, 2 kept");
    let received = server.searches();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].search, search.spl,
        "the escaped SPL reached the server"
    );
    assert_eq!(received[0].earliest_time.as_deref(), Some("-1h"));
    assert_eq!(received[0].latest_time.as_deref(), Some("now"));
}

#[tokio::test]
async fn an_older_tool_name_is_found_too() {
    let server =
        splunk_mcp::SplunkMcp::start_with_search_tool(TOKEN, fixtures(), OLDER_SEARCH_TOOL).await;
    let results = client(server.url(), TOKEN)
        .run(&model_search("opsmesh", "-1h", "a", "b"))
        .await
        .unwrap();
    assert_eq!(results.rows[0]["restarts"], "7");
}

#[tokio::test]
async fn tool_errors_and_bad_tokens_are_typed() {
    let server = splunk_mcp::SplunkMcp::start(TOKEN, fixtures()).await;
    let broken = Search {
        spl: "search index=opsmesh \"unclosed".into(),
        earliest: "-1h".into(),
    };
    match client(server.url(), TOKEN).run(&broken).await {
        Err(SearchError::Failed(message)) => {
            assert!(message.contains("Unable to parse"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let refused = client(server.url(), "wrong")
        .run(&model_search("opsmesh", "-1h", "a", "b"))
        .await;
    assert!(
        matches!(refused, Err(SearchError::Unreachable(_))),
        "{refused:?}"
    );
    assert_eq!(
        server.searches().len(),
        1,
        "the bad token's search never ran"
    );
}
