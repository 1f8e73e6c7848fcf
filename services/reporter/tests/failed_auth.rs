//! Guessing tokens at the reporter's API and MCP doors, over real HTTP: bad bearer tokens
//! count per peer with the console's sign-in form; past the limit the peer's token attempts
//! get `429` with `Retry-After` (even a valid token) until the window has passed, a valid
//! token in between does not clear the count, a signed-in session is not affected, and behind
//! a trusted proxy the count is the forwarded client's. `/mcp` is driven by rmcp's client.

mod support;

use std::{collections::HashMap, path::Path};

use reqwest::StatusCode;
use rmcp::{
    ServiceExt,
    model::ClientConfig,
    service::{RoleClient, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

use support::{
    HecServer, RunningReporter,
    console::{client, sign_in, write_lines},
    memory_bus,
};

const ALICE: &str = "alice-token-0123456789abcdef";
const VICTOR: &str = "victor-token-0123456789abcdef";
const GUESS: &str = "guess-token-0123456789abcdef";

fn tokens(dir: &Path, name: &str) -> String {
    write_lines(
        dir,
        name,
        &[
            format!("alice@example.com:{ALICE}:approver"),
            format!("victor@example.com:{VICTOR}"),
        ],
    )
    .display()
    .to_string()
}

async fn get_with_bearer(url: &str, token: &str) -> reqwest::Response {
    client().get(url).bearer_auth(token).send().await.unwrap()
}

fn assert_throttled(response: &reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry_after), "{what}: {retry_after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_guessing_api_bearer_tokens_is_throttled_with_the_sign_in_form() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let users = tokens(dir.path(), "users");
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true"),
            ("OPSMESH__REPORTER__CONSOLE__USERS_FILE", users.as_str()),
            ("OPSMESH__REPORTER__CONSOLE__COOKIE_SECURE", "false"),
            ("OPSMESH__REPORTER__CONSOLE__LOGIN_FAILURES_PER_PEER", "3"),
        ],
    )
    .await;
    let base = format!("http://{}", reporter.addr);
    let api = format!("{base}/api/incidents");
    // Alice signed in before anyone guessed: her session is not a token attempt.
    let alice = sign_in(&base, ALICE).await;

    for _ in 0..2 {
        let refused = get_with_bearer(&api, GUESS).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    // A viewer's own valid token in between does not clear the count…
    assert_eq!(get_with_bearer(&api, VICTOR).await.status(), StatusCode::OK);
    assert_eq!(
        get_with_bearer(&api, GUESS).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // …so the third bad token locks the peer out: every token attempt waits, valid or not,
    // at the API, the console's pages and the sign-in form alike.
    assert_throttled(&get_with_bearer(&api, ALICE).await, "the API");
    let page = get_with_bearer(&format!("{base}/console/incidents"), ALICE).await;
    assert_throttled(&page, "a console page");
    let form = client()
        .post(format!("{base}/console/login"))
        .header("Origin", &base)
        .form(&[("token", ALICE)])
        .send()
        .await
        .unwrap();
    assert_throttled(&form, "the sign-in form");

    let with_session = client()
        .get(&api)
        .header("Cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_session.status(),
        StatusCode::OK,
        "a session still reads"
    );
    let metric = "opsmesh_reporter_failed_auth_throttled_total";
    assert_eq!(reporter.metric(metric, &[("door", "console")]).await, 3.0);
    let peers = "opsmesh_reporter_failed_auth_peers";
    assert_eq!(reporter.metric(peers, &[("door", "console")]).await, 1.0);
    reporter.stop().await.unwrap();
}

async fn mcp_client(
    url: &str,
    token: &str,
    forwarded_for: Option<&str>,
) -> Result<RunningService<RoleClient, ClientConfig>, String> {
    let mut headers = HashMap::new();
    if let Some(address) = forwarded_for {
        headers.insert(
            http::HeaderName::from_static("x-forwarded-for"),
            http::HeaderValue::from_str(address).unwrap(),
        );
    }
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .auth_header(token)
            .custom_headers(headers),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .map_err(|err| format!("{err:?}"))
}

/// A raw `POST /mcp` (the status the rmcp client only reports as an error).
async fn post_mcp(url: &str, token: &str, forwarded_for: &str) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(token)
        .header("X-Forwarded-For", forwarded_for)
        .header("Accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_guessing_mcp_tokens_is_throttled_and_behind_a_proxy_only_that_client() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let mcp_tokens = tokens(dir.path(), "mcp-tokens");
    // The loopback peer is the trusted proxy (the ingress controller, say): failures count
    // against the client its X-Forwarded-For names.
    let config = dir.path().join("opsmesh.toml");
    std::fs::write(
        &config,
        "[reporter.mcp]\nfailures_per_peer = 2\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let reporter = RunningReporter::start_with_file(
        &bus,
        &hec,
        Some(&config),
        &[
            ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN),
            ("OPSMESH__REPORTER__MCP__ENABLED", "true"),
            ("OPSMESH__REPORTER__MCP__TOKENS_FILE", mcp_tokens.as_str()),
        ],
    )
    .await;
    let url = format!("http://{}/mcp", reporter.addr);
    let (guesser, neighbour) = ("192.0.2.66", "192.0.2.7");

    for _ in 0..2 {
        let refused = mcp_client(&url, GUESS, Some(guesser)).await;
        assert!(refused.is_err(), "a bad token does not connect");
    }
    let Err(err) = mcp_client(&url, VICTOR, Some(guesser)).await else {
        panic!("the guesser's valid token waits too");
    };
    assert!(err.contains("429"), "{err}");
    assert_throttled(&post_mcp(&url, VICTOR, guesser).await, "/mcp");
    // The client spoofing an address left of the proxy's entry is still the guesser.
    let spoofed = format!("{neighbour}, {guesser}");
    assert_throttled(&post_mcp(&url, VICTOR, &spoofed).await, "/mcp spoofed");

    // Another client behind the same proxy is not affected.
    let reader = mcp_client(&url, VICTOR, Some(neighbour))
        .await
        .expect("another client connects");
    let tools = reader.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "get_incident"));
    reader.cancel().await.unwrap();

    let metric = "opsmesh_reporter_failed_auth_throttled_total";
    assert_eq!(reporter.metric(metric, &[("door", "mcp")]).await, 3.0);
    assert_eq!(reporter.metric(metric, &[("door", "console")]).await, 0.0);
    reporter.stop().await.unwrap();
}

#[test]
fn zero_limits_are_configuration_errors_naming_the_key() {
    use opsmesh_reporter::mcp::McpConfig;
    use opsmesh_runtime::Validate;
    let enabled = McpConfig {
        enabled: true,
        allow_anonymous_read: true,
        ..McpConfig::default()
    };
    for (config, key) in [
        (
            McpConfig {
                failures_per_peer: 0,
                ..enabled.clone()
            },
            "reporter.mcp.failures_per_peer",
        ),
        (
            McpConfig {
                failure_window: std::time::Duration::ZERO,
                ..enabled.clone()
            },
            "reporter.mcp.failure_window",
        ),
        (
            McpConfig {
                max_failure_peers: 0,
                ..enabled.clone()
            },
            "reporter.mcp.max_failure_peers",
        ),
    ] {
        let err = config.validate("reporter.mcp").unwrap_err().to_string();
        assert!(err.contains(key), "{err} should name {key}");
    }
}
