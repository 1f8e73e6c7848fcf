//! Who may do what, over real HTTP: viewers read and approvers decide through both doors (the
//! console with its API, and `/mcp` driven by rmcp's client); console sessions follow the
//! users file and end at sign-out; the session table is bounded; the proxy header counts only
//! from trusted proxies.

mod support;

use std::{path::Path, time::Duration};

use reqwest::StatusCode;
use rmcp::{
    ServiceExt,
    model::ClientConfig,
    service::{RoleClient, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

use opsmesh_runtime::bus::MemoryBus;
use support::{
    HecServer, RunningReporter,
    console::{client, csrf_of, get_page, sign_in, write_lines},
    eventually,
    incident::{self, Incident, publish_awaiting},
    mcp::{call, mcp_client, text},
    memory_bus,
};

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";
const VICTOR: &str = "victor-token-0123456789abcdef";

/// Alice approves; Victor's line names no role, so he is a viewer.
fn operators() -> Vec<String> {
    vec![
        format!("alice@example.com:{ALICE}:approver"),
        format!("victor@example.com:{VICTOR}"),
    ]
}

async fn start_console(
    bus: &MemoryBus,
    hec: &HecServer,
    users: &Path,
    file: Option<&Path>,
    extra: &[(&str, &str)],
) -> RunningReporter {
    let users = users.display().to_string();
    let mut env = vec![
        ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true"),
        ("OPSMESH__REPORTER__CONSOLE__USERS_FILE", users.as_str()),
        ("OPSMESH__REPORTER__CONSOLE__COOKIE_SECURE", "false"),
    ];
    env.extend_from_slice(extra);
    RunningReporter::start_with_file(bus, hec, file, &env).await
}

/// The incident page once its pending action is shown (to an approver or a viewer).
async fn pending_page(url: &str, cookie: &str) -> String {
    eventually(
        "the incident page with its pending action",
        Duration::from_secs(10),
        || async {
            let (_, page) = get_page(url, cookie).await;
            (page.contains("id=\"approve\"") || page.contains("id=\"viewer-only\"")).then_some(page)
        },
    )
    .await
}

async fn post_decision(
    url: &str,
    cookie: &str,
    origin: &str,
    csrf: &str,
    key: &str,
) -> reqwest::Response {
    client()
        .post(url)
        .header("Cookie", cookie)
        .header("Origin", origin)
        .form(&[
            ("csrf", csrf),
            ("idempotency_key", key),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_but_only_approvers_decide_in_the_console_and_the_api() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let users = write_lines(dir.path(), "users", &operators());
    let reporter = start_console(&bus, &hec, &users, None, &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &incident).await;
    let page_url = format!("{base}/console/incidents/{}", incident.id);

    // The viewer reads the incident, but the page offers no buttons…
    let victor = sign_in(&base, VICTOR).await;
    let page = pending_page(&page_url, &victor).await;
    assert!(page.contains("id=\"viewer-only\""), "{page}");
    assert!(!page.contains("id=\"approve\"") && !page.contains("id=\"reject\""));
    let listed = client()
        .get(format!("{base}/api/incidents/{}", incident.id))
        .bearer_auth(VICTOR)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    // …and a crafted form post (valid session, CSRF token and origin) or API call is refused.
    let decide_url = format!("{page_url}/decision");
    let form = post_decision(
        &decide_url,
        &victor,
        &base,
        &csrf_of(&page),
        &incident.idempotency_key(),
    )
    .await;
    assert_eq!(form.status(), StatusCode::FORBIDDEN);
    let api_url = format!("{base}/api/incidents/{}/approvals", incident.id);
    let api = client()
        .post(&api_url)
        .bearer_auth(VICTOR)
        .json(&json!({"decision": "reject"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::FORBIDDEN);
    let problem: Value = api.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("not-an-approver"),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("viewer"),
        "{problem}"
    );
    assert!(
        incident::approvals(&bus).await.is_empty(),
        "nothing published"
    );

    // The approver sees the buttons and decides.
    let alice = sign_in(&base, ALICE).await;
    let page = pending_page(&page_url, &alice).await;
    assert!(page.contains("id=\"approve\""), "{page}");
    let approved = post_decision(
        &decide_url,
        &alice,
        &base,
        &csrf_of(&page),
        &incident.idempotency_key(),
    )
    .await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    let approvals = incident::approvals(&bus).await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].payload.approver, "alice@example.com");
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_token_cannot_approve_or_reject_over_mcp() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let tokens = write_lines(
        dir.path(),
        "mcp-tokens",
        &[
            format!("assistant:{ALICE}:approver"),
            format!("reader:{VICTOR}"),
        ],
    );
    let tokens = tokens.display().to_string();
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN),
            ("OPSMESH__REPORTER__MCP__ENABLED", "true"),
            ("OPSMESH__REPORTER__MCP__TOKENS_FILE", tokens.as_str()),
        ],
    )
    .await;
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &incident).await;
    let url = format!("http://{}/mcp", reporter.addr);
    let args = json!({"incident_id": incident.id, "idempotency_key": incident.idempotency_key()});

    let reader = mcp_client(&url, VICTOR).await;
    eventually("the incident over MCP", Duration::from_secs(10), || async {
        let result = call(&reader, "get_incident", args.clone()).await;
        (result.is_error != Some(true) && text(&result).contains("awaiting_approval")).then_some(())
    })
    .await;
    for tool in ["approve_action", "reject_action"] {
        let refused = call(&reader, tool, args.clone()).await;
        assert_eq!(refused.is_error, Some(true), "{tool}: {}", text(&refused));
        assert!(
            text(&refused).contains("needs the approver role"),
            "{tool}: {}",
            text(&refused)
        );
    }
    assert!(
        incident::approvals(&bus).await.is_empty(),
        "nothing published"
    );
    reader.cancel().await.unwrap();

    let assistant = mcp_client(&url, ALICE).await;
    let approved = call(&assistant, "approve_action", args).await;
    assert_ne!(approved.is_error, Some(true), "{}", text(&approved));
    let approvals = incident::approvals(&bus).await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].payload.approver, "mcp:assistant");
    assistant.cancel().await.unwrap();
    reporter.stop().await.unwrap();
}

/// The names of the tools `client` is offered.
async fn tool_names(client: &RunningService<RoleClient, ClientConfig>) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|tool| tool.name.to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_approvers_are_offered_the_decision_and_investigate_tools_over_mcp() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let tokens = write_lines(
        dir.path(),
        "mcp-tokens",
        &[
            format!("assistant:{ALICE}:approver"),
            format!("reader:{VICTOR}"),
        ],
    );
    let tokens = tokens.display().to_string();
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN),
            ("OPSMESH__REPORTER__MCP__ENABLED", "true"),
            ("OPSMESH__REPORTER__MCP__TOKENS_FILE", tokens.as_str()),
            ("OPSMESH__REPORTER__MCP__ALLOW_ANONYMOUS_READ", "true"),
        ],
    )
    .await;
    let url = format!("http://{}/mcp", reporter.addr);
    let reading = [
        "get_incident",
        "get_investigation",
        "list_incidents",
        "search_runbooks",
        "verify_audit_chain",
    ];

    let assistant = mcp_client(&url, ALICE).await;
    let mut everything = reading.to_vec();
    everything.extend(["approve_action", "investigate", "reject_action"]);
    everything.sort();
    assert_eq!(tool_names(&assistant).await, everything);
    assistant.cancel().await.unwrap();

    let reader = mcp_client(&url, VICTOR).await;
    assert_eq!(tool_names(&reader).await, reading);
    // Not offered, and still refused when called by name.
    let refused = call(&reader, "approve_action", json!({"incident_id": "inc-1"})).await;
    assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
    reader.cancel().await.unwrap();

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.clone()),
    );
    let anonymous = ClientConfig::default().serve(transport).await.unwrap();
    assert_eq!(tool_names(&anonymous).await, reading);
    anonymous.cancel().await.unwrap();
    reporter.stop().await.unwrap();
}

/// Whether `cookie` still opens the console: a page (200) or a redirect to sign in (303).
async fn signed_in(base: &str, cookie: &str) -> bool {
    let (status, _) = get_page(&format!("{base}/console/incidents"), cookie).await;
    match status {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => false,
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_follow_the_users_file_and_end_at_sign_out() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let alice_line = format!("alice@example.com:{ALICE}:approver");
    let bob_line = format!("bob@example.com:{BOB}:approver");
    let users = write_lines(dir.path(), "users", &[alice_line.clone(), bob_line.clone()]);
    let reporter = start_console(&bus, &hec, &users, None, &[]).await;
    let base = format!("http://{}", reporter.addr);
    let alice = sign_in(&base, ALICE).await;
    let bob = sign_in(&base, BOB).await;
    assert!(signed_in(&base, &alice).await && signed_in(&base, &bob).await);

    // Bob leaves the file: his session ends at once (pages and the API), no restart.
    write_lines(dir.path(), "users", std::slice::from_ref(&alice_line));
    assert!(
        !signed_in(&base, &bob).await,
        "a removed user keeps no access"
    );
    let api = client()
        .get(format!("{base}/api/incidents"))
        .header("Cookie", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert!(signed_in(&base, &alice).await, "others are not affected");
    // Back in the file, his old session stays ended: he signs in again.
    write_lines(dir.path(), "users", &[alice_line, bob_line]);
    assert!(!signed_in(&base, &bob).await);

    // Signing out ends the session on the server: the same cookie replayed is refused.
    let (_, page) = get_page(&format!("{base}/console/incidents"), &alice).await;
    let out = client()
        .post(format!("{base}/console/logout"))
        .header("Cookie", &alice)
        .header("Origin", &base)
        .form(&[("csrf", csrf_of(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(!signed_in(&base, &alice).await, "replayed after sign-out");
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_table_is_bounded_and_counts_evictions() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let users = write_lines(dir.path(), "users", &operators());
    let reporter = start_console(
        &bus,
        &hec,
        &users,
        None,
        &[("OPSMESH__REPORTER__CONSOLE__MAX_SESSIONS", "2")],
    )
    .await;
    let base = format!("http://{}", reporter.addr);
    let first = sign_in(&base, ALICE).await;
    let second = sign_in(&base, VICTOR).await;
    let third = sign_in(&base, ALICE).await;
    assert!(
        !signed_in(&base, &first).await,
        "the oldest session was evicted"
    );
    assert!(signed_in(&base, &second).await && signed_in(&base, &third).await);
    let metric = "opsmesh_reporter_console_sessions_evicted_total";
    assert_eq!(reporter.metric(metric, &[]).await, 1.0);
    assert_eq!(
        reporter
            .metric("opsmesh_reporter_console_sessions", &[])
            .await,
        2.0
    );
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_header_counts_only_from_trusted_proxies_and_names_no_approver_by_default() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let users = write_lines(dir.path(), "users", &operators());
    let config = |proxy: &str| {
        let path = dir.path().join(format!("opsmesh-{proxy}.toml"));
        std::fs::write(
            &path,
            format!(
                "[reporter.console]\ntrusted_user_header = \"X-Forwarded-User\"\ntrusted_proxies = [\"{proxy}\"]\nproxy_approvers = [\"carol@example.com\"]\n"
            ),
        )
        .unwrap();
        path
    };

    // Our loopback peer is not the configured proxy: the header is ignored.
    let elsewhere = config("192.0.2.10");
    let reporter = start_console(&bus, &hec, &users, Some(&elsewhere), &[]).await;
    let base = format!("http://{}", reporter.addr);
    let spoofed = client()
        .get(format!("{base}/api/incidents"))
        .header("X-Forwarded-User", "carol@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::UNAUTHORIZED);
    reporter.stop().await.unwrap();

    // From the proxy: carol is a listed approver, dave only a viewer.
    let loopback = config("127.0.0.1");
    let reporter = start_console(&bus, &hec, &users, Some(&loopback), &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-c");
    publish_awaiting(&bus, &incident).await;
    let page_url = format!("{base}/console/incidents/{}", incident.id);
    let as_user = |user: &'static str| {
        let url = page_url.clone();
        async move {
            let response = client()
                .get(&url)
                .header("X-Forwarded-User", user)
                .send()
                .await
                .unwrap();
            let cookie = support::console::set_cookie(&response, "opsmesh_csrf").unwrap();
            (cookie, response.text().await.unwrap())
        }
    };
    let dave_cookie = eventually("dave's page", Duration::from_secs(10), || async {
        let (cookie, page) = as_user("dave@example.com").await;
        page.contains("id=\"viewer-only\"").then_some(cookie)
    })
    .await;
    // A viewer's page carries no decision form (nor its CSRF token): the role alone refuses.
    let refused = client()
        .post(format!("{page_url}/decision"))
        .header("X-Forwarded-User", "dave@example.com")
        .header("Cookie", &dave_cookie)
        .header("Origin", &base)
        .form(&[
            ("idempotency_key", incident.idempotency_key()),
            ("decision", "approve".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("not-an-approver"),
        "{problem}"
    );
    let (_, carol_page) = as_user("carol@example.com").await;
    assert!(carol_page.contains("id=\"approve\""), "{carol_page}");
    assert!(incident::approvals(&bus).await.is_empty());
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_guessing_tokens_is_throttled() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let users = write_lines(dir.path(), "users", &operators());
    let reporter = start_console(
        &bus,
        &hec,
        &users,
        None,
        &[("OPSMESH__REPORTER__CONSOLE__LOGIN_FAILURES_PER_PEER", "2")],
    )
    .await;
    let base = format!("http://{}", reporter.addr);
    let attempt = |token: &'static str| {
        let base = base.clone();
        async move {
            client()
                .post(format!("{base}/console/login"))
                .header("Origin", &base)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..2 {
        assert_eq!(
            attempt("guess-0123456789abcdef").await.status(),
            StatusCode::SEE_OTHER
        );
    }
    // Even the right token waits out the window now.
    let throttled = attempt(ALICE).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("retry-after"));
    assert_eq!(
        reporter
            .metric(
                "opsmesh_reporter_failed_auth_throttled_total",
                &[("door", "console")]
            )
            .await,
        1.0
    );
    reporter.stop().await.unwrap();
}
