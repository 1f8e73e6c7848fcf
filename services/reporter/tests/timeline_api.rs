//! The incident read model and its HTTP API and console forms, on the in-memory bus:
//! authentication, the reasoning chain, approvals published once, CSRF and origin checks,
//! audit-chain verification, bounds and the alert-to-incident join.

mod support;

use std::{path::PathBuf, sync::Arc, time::Duration};

use prometheus::Registry;
use reqwest::StatusCode;
use serde_json::Value;

use opsmesh_proto::{
    IncidentState,
    approval::{Approval, ApprovalDecision, signed_bytes},
};
use opsmesh_reporter::timeline::{ChainStatus, IncidentStore, TimelineConfig};
use opsmesh_runtime::signing::KeyRing;
use support::{
    HecServer, RunningReporter,
    console::{client, csrf_of, set_cookie},
    eventually,
    incident::{self, Incident, publish, publish_awaiting},
    memory_bus,
};

const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";

fn users_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("console-users");
    std::fs::write(
        &path,
        format!(
            "# console operators\nalice@example.com:{ALICE}:approver\nbob@example.com:{BOB}:approver\n"
        ),
    )
    .unwrap();
    path
}

async fn start_console(
    bus: &opsmesh_runtime::bus::MemoryBus,
    hec: &HecServer,
    dir: &tempfile::TempDir,
    extra: &[(&str, &str)],
) -> RunningReporter {
    start_console_with_file(bus, hec, dir, None, extra).await
}

/// As [`start_console`], with a TOML configuration file (for lists) under the variables.
async fn start_console_with_file(
    bus: &opsmesh_runtime::bus::MemoryBus,
    hec: &HecServer,
    dir: &tempfile::TempDir,
    file: Option<&std::path::Path>,
    extra: &[(&str, &str)],
) -> RunningReporter {
    let users = users_file(dir).display().to_string();
    let mut env = vec![
        ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true"),
        ("OPSMESH__REPORTER__CONSOLE__USERS_FILE", users.as_str()),
        ("OPSMESH__REPORTER__CONSOLE__COOKIE_SECURE", "false"),
    ];
    env.extend_from_slice(extra);
    RunningReporter::start_with_file(bus, hec, file, &env).await
}

async fn get_json(url: &str, token: &str) -> (StatusCode, Value) {
    let response = client().get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_needs_authentication_and_shows_the_reasoning_chain() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let reporter = start_console(&bus, &hec, &dir, &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &incident).await;

    let anonymous = client()
        .get(format!("{base}/api/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let wrong = client()
        .get(format!("{base}/api/incidents"))
        .bearer_auth("not-a-valid-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let list = eventually(
        "the incident awaiting approval",
        Duration::from_secs(10),
        || async {
            let (_, body) = get_json(&format!("{base}/api/incidents"), ALICE).await;
            let first = body["incidents"].as_array()?.first()?.clone();
            (first["status"] == "awaiting_approval").then_some(first)
        },
    )
    .await;
    assert_eq!(list["id"], incident.id.as_str());
    assert_eq!(list["root_cause"], "oom_killed");
    assert_eq!(list["awaiting_approval"], true);
    assert_eq!(list["audit_chain"], "intact");
    assert_eq!(list["alert_count"], 1);

    let (status, detail) = get_json(&format!("{base}/api/incidents/{}", incident.id), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        detail["evidence"][0]["query"]
            .as_str()
            .unwrap()
            .contains("index=opsmesh sourcetype=\"opsmesh:models\""),
        "evidence carries its SPL: {detail}"
    );
    assert_eq!(detail["runbook"]["section"], "Raise the memory limit");
    assert!(
        detail["runbook_section"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "runbook section text from the built-in runbooks"
    );
    assert_eq!(detail["decision"]["state"], "awaiting_approval");
    assert_eq!(
        detail["pending_approval"]["idempotency_key"],
        incident.idempotency_key().as_str()
    );
    assert_eq!(detail["audit_chain"]["status"], "intact");
    assert_eq!(detail["alerts"].as_array().unwrap().len(), 1);
    assert!(detail["timeline"].as_array().unwrap().len() >= 3);

    let (status, missing) = get_json(&format!("{base}/api/incidents/nope"), ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["status"], 404);
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_approval_is_published_once_with_the_approver() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let reporter = start_console(&bus, &hec, &dir, &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &incident).await;
    let url = format!("{base}/api/incidents/{}/approvals", incident.id);
    eventually("pending approval", Duration::from_secs(10), || async {
        let (_, body) = get_json(&format!("{base}/api/approvals"), BOB).await;
        (!body["pending"].as_array()?.is_empty()).then_some(())
    })
    .await;

    let wrong_key = client()
        .post(&url)
        .bearer_auth(BOB)
        .json(&serde_json::json!({"decision": "approve", "idempotency_key": "other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::CONFLICT);

    let first = client()
        .post(&url)
        .bearer_auth(BOB)
        .json(&serde_json::json!({"decision": "approve", "comment": "looks right"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let again = client()
        .post(&url)
        .bearer_auth(ALICE)
        .json(&serde_json::json!({"decision": "reject"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let problem: Value = again.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("bob@example.com")
    );

    let approvals = incident::approvals(&bus).await;
    assert_eq!(approvals.len(), 1, "published exactly once");
    let approval = &approvals[0];
    assert_eq!(approval.incident_id.as_deref(), Some(incident.id.as_str()));
    assert_eq!(approval.payload.approver, "bob@example.com");
    assert_eq!(approval.payload.decision, ApprovalDecision::Approve);
    assert_eq!(approval.payload.idempotency_key, incident.idempotency_key());
    assert_eq!(approval.payload.comment.as_deref(), Some("looks right"));
    // Signed with the reporter's key, over the decision and where it belongs: the remediator
    // holding the public half believes it, and believes no edited copy.
    let trusted = KeyRing::from_pem(&support::approval_key().public_pem()).unwrap();
    let check = |a: &opsmesh_proto::Envelope<Approval>| {
        trusted.verify(&signed_bytes(a), a.payload.signature.as_ref())
    };
    assert_eq!(check(approval), Ok(()));
    let mut moved = approval.clone();
    moved.incident_id = Some("another-incident".into());
    assert!(check(&moved).is_err(), "moved to another incident");
    let mut edited = approval.clone();
    edited.payload.approver = "mallory".into();
    assert!(check(&edited).is_err(), "another approver");
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_signing_key_decisions_are_refused_and_nothing_is_published() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    // An empty `value` would be a configuration error; a variable naming nothing unsets it.
    let reporter = start_console(
        &bus,
        &hec,
        &dir,
        &[("OPSMESH__REPORTER__APPROVALS__SIGNING_KEY", "")],
    )
    .await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &incident).await;
    eventually("pending approval", Duration::from_secs(10), || async {
        let (_, body) = get_json(&format!("{base}/api/approvals"), BOB).await;
        (!body["pending"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let response = client()
        .post(format!("{base}/api/incidents/{}/approvals", incident.id))
        .bearer_auth(BOB)
        .json(&serde_json::json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("reporter.approvals.signing_key"),
        "{problem}"
    );
    assert!(incident::approvals(&bus).await.is_empty());
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_forms_need_a_session_a_csrf_token_and_the_same_origin() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let reporter = start_console(&bus, &hec, &dir, &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &incident).await;
    let page_url = format!("{base}/console/incidents/{}", incident.id);

    // Not signed in: pages redirect to sign-in, forms are refused.
    let redirect = client().get(&page_url).send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    assert!(
        redirect.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/login?next=")
    );

    // A sign-in from another origin is refused; a bad token goes back to the form.
    let cross = client()
        .post(format!("{base}/console/login"))
        .header("Origin", "https://evil.example")
        .form(&[("token", ALICE)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let bad = client()
        .post(format!("{base}/console/login"))
        .header("Origin", &base)
        .form(&[("token", "wrong-token-wrong-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&bad, "opsmesh_session").is_none());

    let login = client()
        .post(format!("{base}/console/login"))
        .header("Origin", &base)
        .form(&[
            ("token", ALICE),
            ("next", &format!("/console/incidents/{}", incident.id)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let raw_cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("opsmesh_session="))
        .unwrap();
    assert!(raw_cookie.contains("HttpOnly"), "{raw_cookie}");
    assert!(raw_cookie.contains("SameSite=Lax"), "{raw_cookie}");
    let cookie = set_cookie(&login, "opsmesh_session").unwrap();

    let page = eventually(
        "incident page with the approval form",
        Duration::from_secs(10),
        || {
            let (cookie, url) = (cookie.clone(), page_url.clone());
            async move {
                let response = client()
                    .get(&url)
                    .header("Cookie", cookie)
                    .send()
                    .await
                    .ok()?;
                assert!(
                    response.headers()["content-security-policy"]
                        .to_str()
                        .unwrap()
                        .contains("script-src 'self'")
                );
                let text = response.text().await.ok()?;
                text.contains("id=\"approve\"").then_some(text)
            }
        },
    )
    .await;
    assert!(page.contains("alice@example.com"));
    assert!(
        page.contains("index=opsmesh sourcetype=&quot;opsmesh:models&quot;"),
        "SPL shown, escaped"
    );
    let csrf = csrf_of(&page);
    let decide = format!("{base}/console/incidents/{}/decision", incident.id);
    let form = |csrf: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("idempotency_key".to_owned(), incident.idempotency_key()),
            ("decision".to_owned(), "approve".to_owned()),
        ]
    };

    let no_token = client()
        .post(&decide)
        .header("Cookie", &cookie)
        .header("Origin", &base)
        .form(&form(""))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let forged = client()
        .post(&decide)
        .header("Cookie", &cookie)
        .header("Origin", &base)
        .form(&form(&"0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let cross_site = client()
        .post(&decide)
        .header("Cookie", &cookie)
        .header("Origin", "https://evil.example")
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let no_origin = client()
        .post(&decide)
        .header("Cookie", &cookie)
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), StatusCode::FORBIDDEN);
    assert!(
        incident::approvals(&bus).await.is_empty(),
        "nothing published yet"
    );

    let ok = client()
        .post(&decide)
        .header("Cookie", &cookie)
        .header("Origin", &base)
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let approvals = incident::approvals(&bus).await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].payload.approver, "alice@example.com");
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticating_proxy_user_is_trusted_and_gets_a_csrf_cookie() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let config = dir.path().join("opsmesh.toml");
    std::fs::write(
        &config,
        "[reporter.console]\ntrusted_user_header = \"X-Forwarded-User\"\ntrusted_proxies = [\"127.0.0.1\"]\nproxy_approvers = [\"carol@example.com\"]\n",
    )
    .unwrap();
    let reporter = start_console_with_file(&bus, &hec, &dir, Some(&config), &[]).await;
    let base = format!("http://{}", reporter.addr);
    let incident = Incident::oom("ml-team-b");
    publish_awaiting(&bus, &incident).await;
    let page_url = format!("{base}/console/incidents/{}", incident.id);
    let (page, csrf_cookie) = eventually("page via the proxy", Duration::from_secs(10), || {
        let url = page_url.clone();
        async move {
            let response = client()
                .get(&url)
                .header("X-Forwarded-User", "carol@example.com")
                .send()
                .await
                .ok()?;
            let cookie = set_cookie(&response, "opsmesh_csrf")?;
            let text = response.text().await.ok()?;
            text.contains("id=\"reject\"").then_some((text, cookie))
        }
    })
    .await;
    assert!(page.contains("carol@example.com"));
    let response = client()
        .post(format!("{base}/console/incidents/{}/decision", incident.id))
        .header("X-Forwarded-User", "carol@example.com")
        .header("Cookie", &csrf_cookie)
        .header("Referer", &page_url)
        .form(&[
            ("csrf", csrf_of(&page)),
            ("idempotency_key", incident.idempotency_key()),
            ("decision", "reject".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let approvals = incident::approvals(&bus).await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].payload.approver, "carol@example.com");
    assert_eq!(approvals[0].payload.decision, ApprovalDecision::Reject);
    reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("short.key");
    std::fs::write(&key, "too short").unwrap();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("OPSMESH__REPORTER__CONSOLE__ENABLED", "true".into())],
            "`reporter.console.users_file`",
        ),
        (
            vec![
                ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true".into()),
                (
                    "OPSMESH__REPORTER__CONSOLE__USERS_FILE",
                    users_file(&dir).display().to_string(),
                ),
                (
                    "OPSMESH__REPORTER__CONSOLE__SESSION_KEY_FILE",
                    key.display().to_string(),
                ),
            ],
            "`reporter.console.session_key_file`",
        ),
        (
            vec![
                ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true".into()),
                (
                    "OPSMESH__REPORTER__CONSOLE__TRUSTED_USER_HEADER",
                    "X Bad".into(),
                ),
            ],
            "`reporter.console.trusted_user_header`",
        ),
        (
            vec![
                ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true".into()),
                (
                    "OPSMESH__REPORTER__CONSOLE__TRUSTED_USER_HEADER",
                    "X-Forwarded-User".into(),
                ),
            ],
            // A start-up error, naming both keys: without trusted proxies any peer could
            // send the header and be anyone.
            "`reporter.console.trusted_proxies`: must list the authenticating proxy's addresses when reporter.console.trusted_user_header is set",
        ),
        (
            vec![("OPSMESH__REPORTER__TIMELINE__MAX_INCIDENTS", "0".into())],
            "`reporter.timeline.max_incidents`",
        ),
        (
            vec![("OPSMESH__REPORTER__MCP__ENABLED", "true".into())],
            "`reporter.mcp.tokens_file`",
        ),
        (
            vec![(
                "OPSMESH__REPORTER__NOTIFY__TEMPLATES__RESOLVED",
                "{oops}".into(),
            )],
            "`reporter.notify.templates.resolved`",
        ),
    ];
    for (extra, key) in cases {
        let mut env: Vec<(String, String)> = vec![
            ("OPSMESH__BUS__KIND".into(), "memory".into()),
            ("OPSMESH__REPORTER__HEC__FILE".into(), "/dev/null".into()),
        ];
        env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let tree = opsmesh_runtime::ConfigTree::load_with_env(None, env).unwrap();
        let err = tree
            .section::<opsmesh_reporter::ReporterConfig>("reporter")
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err} should name {key}");
    }
}

#[tokio::test]
async fn the_audit_chain_detects_edits_and_gaps() {
    let store = IncidentStore::new(&TimelineConfig::default(), &Registry::new());
    let incident = Incident::oom("ml-team-a");
    store.apply_alert(incident.alert.clone());
    store.apply_diagnosis(incident.diagnosis.clone());
    let first = incident.awaiting();
    store.apply_remediation(first.clone());
    let executing = incident.record(1, Some(&first), IncidentState::Executing, None, "approved");
    store.apply_remediation(executing.clone());
    let detail = store.detail(&incident.id).unwrap();
    assert_eq!(detail.audit_chain.status, ChainStatus::Intact);
    assert_eq!(detail.audit_chain.records, 2);

    // An edited record (reason changed after sealing) breaks the chain.
    let mut edited = incident.record(2, Some(&executing), IncidentState::Resolved, None, "done");
    edited.payload.reason = "done (edited)".into();
    store.apply_remediation(edited);
    let detail = store.detail(&incident.id).unwrap();
    assert_eq!(detail.audit_chain.status, ChainStatus::Broken);
    assert!(
        detail.audit_chain.problems[0].contains("does not match its content"),
        "{:?}",
        detail.audit_chain.problems
    );

    // A gap (seq 1 missing) breaks another incident's chain.
    let other = Incident::oom("ml-team-b");
    let first = other.awaiting();
    let second = other.record(1, Some(&first), IncidentState::Executing, None, "approved");
    let third = other.record(2, Some(&second), IncidentState::Resolved, None, "done");
    store.apply_remediation(first);
    store.apply_remediation(third);
    let detail = store.detail(&other.id).unwrap();
    assert_eq!(detail.audit_chain.status, ChainStatus::Broken);
}

#[tokio::test]
async fn the_timeline_is_bounded_and_joins_reopened_incidents() {
    let store = IncidentStore::new(
        &TimelineConfig {
            max_incidents: 3,
            ..TimelineConfig::default()
        },
        &Registry::new(),
    );
    let incidents: Vec<Incident> = (0..5).map(|_| Incident::oom("ml-team-a")).collect();
    for incident in &incidents {
        store.apply_alert(incident.alert.clone());
        store.apply_diagnosis(incident.diagnosis.clone());
    }
    let listed: Vec<String> = store.list().into_iter().map(|s| s.id).collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed,
        incidents[2..]
            .iter()
            .rev()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(store.evicted(), 2);
    // Redelivery changes nothing.
    assert!(!store.apply_diagnosis(incidents[4].diagnosis.clone()));

    // A reopened incident: its alert carries the fingerprint, its diagnosis `<fp>-2` and
    // names the alert; the alert moves to the new incident.
    let store = IncidentStore::new(&TimelineConfig::default(), &Registry::new());
    let first = Incident::oom("ml-team-c");
    store.apply_alert(first.alert.clone());
    store.apply_diagnosis(first.diagnosis.clone());
    let mut again = Incident::oom("ml-team-c");
    again.alert.incident_id = Some(first.id.clone());
    let reopened = format!("{}-2", first.id);
    again.diagnosis.incident_id = Some(reopened.clone());
    store.apply_alert(again.alert.clone());
    assert_eq!(store.detail(&first.id).unwrap().alerts.len(), 2);
    store.apply_diagnosis(again.diagnosis.clone());
    assert_eq!(store.detail(&first.id).unwrap().alerts.len(), 1);
    let detail = store.detail(&reopened).unwrap();
    assert_eq!(detail.alerts.len(), 1);
    assert_eq!(detail.alerts[0].id, again.alert.id);
    assert_eq!(detail.summary.status, "diagnosed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_arrive_as_server_sent_events() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let reporter = start_console(&bus, &hec, &dir, &[]).await;
    let base = format!("http://{}", reporter.addr);
    let unauthenticated = client()
        .get(format!("{base}/console/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let mut events = client()
        .get(format!("{base}/console/events"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let incident = Arc::new(Incident::oom("ml-team-a"));
    publish(&bus, &incident.alert).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&incident.id) {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("an update within 10 s")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: update"), "{seen}");
    drop(events);
    // Open streams do not hold up shutdown.
    let _held = client()
        .get(format!("{base}/console/events"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let stopping = tokio::time::Instant::now();
    reporter.stop().await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(10));
}
