//! Slack and PagerDuty notifications against local servers that answer like the real
//! services: 429 with Retry-After is honoured, 5xx is retried, 400 is not; PagerDuty's
//! dedup_key is the incident id and `resolved` resolves it; routes filter by namespace,
//! severity and event; templates come from configuration.

mod support;

use std::{path::Path, time::Duration};

use serde_json::Value;

use opsmesh_proto::{IncidentState, Severity, remediation::Verification};
use support::{
    HecServer, RunningReporter, eventually,
    incident::{Incident, publish, publish_awaiting},
    memory_bus,
    receivers::{Answer, Receiver},
};

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

/// Configuration with one unfiltered Slack route, one Slack route for `ml-team-b` advice
/// only, and PagerDuty for critical incidents' pages.
fn config(
    dir: &Path,
    slack: &Receiver,
    team_b: &Receiver,
    pagerduty: &Receiver,
) -> std::path::PathBuf {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path.display().to_string()
    };
    let toml = format!(
        r#"
[reporter.notify]
console_url = "https://opsmesh.example.com"
retry_backoff = "100ms"
retry_backoff_max = "2s"
retry_budget = "15s"
diagnosis_wait = "3s"

[reporter.notify.templates]
awaiting_approval = "APPROVAL {{incident_id}}: {{action}} ({{severity}}) {{console_link}}"

[reporter.notify.slack.all]
webhook_url_file = "{}"

[reporter.notify.slack.team-b]
webhook_url_file = "{}"
match = {{ namespaces = ["ml-team-b*"], events = ["advised"] }}

[reporter.notify.pagerduty.oncall]
routing_key_file = "{}"
url = "{}"
match = {{ min_severity = "critical", events = ["escalated", "awaiting_approval", "verification_failed", "resolved"] }}
"#,
        write("slack-all", &slack.url),
        write("slack-team-b", &team_b.url),
        write("pd-key", ROUTING_KEY),
        pagerduty.url,
    );
    let path = dir.join("reporter.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

struct Setup {
    bus: opsmesh_runtime::bus::MemoryBus,
    _hec: HecServer,
    reporter: RunningReporter,
    slack: Receiver,
    team_b: Receiver,
    pagerduty: Receiver,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (slack, team_b, pagerduty) = (
        Receiver::slack().await,
        Receiver::slack().await,
        Receiver::pagerduty().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), &slack, &team_b, &pagerduty);
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let reporter = RunningReporter::start_with_file(&bus, &hec, Some(&file), &[]).await;
    Setup {
        bus,
        _hec: hec,
        reporter,
        slack,
        team_b,
        pagerduty,
        _dir: dir,
    }
}

async fn requests_of(receiver: &Receiver, count: usize) -> Vec<support::receivers::Request> {
    eventually(
        &format!("{count} requests at {}", receiver.url),
        Duration::from_secs(20),
        || async {
            let requests = receiver.requests();
            (requests.len() >= count).then_some(requests)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_and_pagerduty_dedups_on_the_incident() {
    let s = setup().await;
    // Slack rate-limits once (Retry-After: 1); PagerDuty fails once with a 503.
    s.slack.script([Answer::rate_limited(1)]);
    s.pagerduty.script([Answer::new(503, "")]);
    let mut incident = Incident::oom("ml-team-a");
    incident.alert.payload.severity = Severity::Critical;
    let awaiting = publish_awaiting(&s.bus, &incident).await;

    let slack = requests_of(&s.slack, 2).await;
    assert_eq!(slack[0].body, slack[1].body, "the same message is retried");
    let waited = slack[1].at - slack[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After honoured: {waited:?}"
    );
    let text = slack[1].body["text"].as_str().unwrap();
    assert_eq!(
        text,
        format!(
            "APPROVAL {0}: patch_memory_limit {1} (critical) https://opsmesh.example.com/console/incidents/{0}",
            incident.id,
            incident.target()
        ),
        "the configured template"
    );

    let pages = requests_of(&s.pagerduty, 2).await;
    let page = &pages[1].body;
    assert_eq!(pages[0].body, pages[1].body);
    assert_eq!(page["event_action"], "trigger");
    assert_eq!(page["routing_key"], ROUTING_KEY);
    assert_eq!(page["dedup_key"], incident.id.as_str());
    assert_eq!(page["payload"]["severity"], "critical");
    assert_eq!(page["payload"]["group"], "ml-team-a");
    assert_eq!(page["payload"]["class"], "oom_killed");
    assert!(
        page["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("APPROVAL ")
    );
    assert_eq!(
        page["links"][0]["href"],
        format!(
            "https://opsmesh.example.com/console/incidents/{}",
            incident.id
        )
    );

    // Resolved: PagerDuty resolves the same dedup key; Slack hears it too.
    let executing = incident.record(
        1,
        Some(&awaiting),
        IncidentState::Executing,
        None,
        "approved",
    );
    publish(&s.bus, &executing).await;
    let resolved = incident.record(
        2,
        Some(&executing),
        IncidentState::Resolved,
        Some(Verification {
            attempts: 1,
            healthy: true,
            detail: "ready".into(),
        }),
        "memory limit raised; healthy",
    );
    publish(&s.bus, &resolved).await;
    let pages = requests_of(&s.pagerduty, 3).await;
    assert_eq!(pages.len(), 3, "executing is not notified");
    let resolve: &Value = &pages[2].body;
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], incident.id.as_str());
    let slack = requests_of(&s.slack, 3).await;
    assert!(
        slack[2].body["text"]
            .as_str()
            .unwrap()
            .contains(&format!("incident {} resolved", incident.id))
    );
    assert!(s.team_b.requests().is_empty(), "team-b only takes advice");

    assert_eq!(
        s.reporter
            .metric(
                "opsmesh_reporter_notifications_total",
                &[("route", "oncall"), ("outcome", "sent")]
            )
            .await,
        2.0
    );
    s.reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried() {
    let s = setup().await;
    s.slack.script([Answer::new(400, "invalid_payload")]);
    s.pagerduty.script([Answer::new(
        400,
        r#"{"status":"invalid event","message":"Event object is invalid","errors":["x"]}"#,
    )]);
    let mut incident = Incident::oom("ml-team-a");
    incident.alert.payload.severity = Severity::Critical;
    publish_awaiting(&s.bus, &incident).await;
    requests_of(&s.slack, 1).await;
    requests_of(&s.pagerduty, 1).await;
    eventually("rejections counted", Duration::from_secs(10), || async {
        let rejected = s
            .reporter
            .metric(
                "opsmesh_reporter_notifications_total",
                &[("outcome", "rejected")],
            )
            .await;
        (rejected == 2.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.slack.requests().len(), 1, "a 400 is not retried");
    assert_eq!(s.pagerduty.requests().len(), 1, "a 400 is not retried");
    s.reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_carries_the_developer_fix_and_routes_filter() {
    let s = setup().await;
    // ml-team-b (high severity): advised with a developer fix → both Slack routes, no page.
    let mut advised = Incident::oom("ml-team-b");
    advised.diagnosis.payload.developer_fix = Some("securityContext:\n  runAsNonRoot: true".into());
    publish(&s.bus, &advised.alert).await;
    publish(&s.bus, &advised.diagnosis).await;
    publish(
        &s.bus,
        &advised.record(
            0,
            None,
            IncidentState::Advised,
            None,
            "the fix is for the developer",
        ),
    )
    .await;
    let team_b = requests_of(&s.team_b, 1).await;
    let text = team_b[0].body["text"].as_str().unwrap();
    assert!(text.contains("runAsNonRoot: true"), "{text}");
    assert!(text.contains("developer fix for oom_killed"), "{text}");
    requests_of(&s.slack, 1).await;

    // ml-team-a, critical, verification failed → Slack "all" and a page; not team-b.
    let mut failed = Incident::oom("ml-team-a");
    failed.alert.payload.severity = Severity::Critical;
    publish(&s.bus, &failed.alert).await;
    publish(&s.bus, &failed.diagnosis).await;
    publish(
        &s.bus,
        &failed.record(
            0,
            None,
            IncidentState::RolledBack,
            Some(Verification {
                attempts: 3,
                healthy: false,
                detail: "0/2 replicas ready".into(),
            }),
            "verification failed; rolled back",
        ),
    )
    .await;
    let slack = requests_of(&s.slack, 2).await;
    assert!(
        slack[1].body["text"]
            .as_str()
            .unwrap()
            .contains("verification failed")
    );
    let pages = requests_of(&s.pagerduty, 1).await;
    assert_eq!(pages[0].body["dedup_key"], failed.id.as_str());
    assert_eq!(
        pages[0].body["payload"]["custom_details"]["verification"],
        "unhealthy after 3 attempts: 0/2 replicas ready"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.team_b.requests().len(), 1);
    assert_eq!(
        s.pagerduty.requests().len(),
        1,
        "the high-severity advice does not page"
    );
    s.reporter.stop().await.unwrap();
}
