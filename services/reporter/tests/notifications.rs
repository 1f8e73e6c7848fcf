//! Slack and PagerDuty notifications against local servers that answer like the real
//! services: 429 with Retry-After is honoured, 5xx is retried, 400 is not; PagerDuty's
//! dedup_key is the incident id and `resolved` resolves it; routes filter by namespace,
//! severity and event; templates come from configuration. A notification a route rejects or
//! that outlasts the retry budget is dead-lettered for that route alone, and a replay of the
//! dead letter re-sends it to that route once.

mod support;

use std::{borrow::Cow, path::Path, time::Duration};

use serde_json::Value;

use opsmesh_proto::{IncidentState, Severity, remediation::Verification, topics};
use opsmesh_reporter::notify::NOTIFICATIONS;
use opsmesh_runtime::{
    Bus,
    bus::{HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_ORIGIN, Outgoing, Received},
};
use support::{
    HecServer, RunningReporter, eventually,
    incident::{Incident, publish, publish_awaiting},
    memory_bus,
    receivers::{Answer, Receiver},
};

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

/// Configuration with one unfiltered Slack route, one Slack route for `ml-team-b` advice
/// only, and PagerDuty for critical incidents' pages; `retry` sets the retry budget.
fn config(
    dir: &Path,
    slack: &Receiver,
    team_b: &Receiver,
    pagerduty: &Receiver,
    retry: &str,
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
diagnosis_wait = "3s"
{}

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
        retry,
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
    hec: HecServer,
    file: std::path::PathBuf,
    reporter: RunningReporter,
    slack: Receiver,
    team_b: Receiver,
    pagerduty: Receiver,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with(r#"retry_budget = "15s""#).await
}

async fn setup_with(retry: &str) -> Setup {
    let (slack, team_b, pagerduty) = (
        Receiver::slack().await,
        Receiver::slack().await,
        Receiver::pagerduty().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), &slack, &team_b, &pagerduty, retry);
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let reporter = RunningReporter::start_with_file(&bus, &hec, Some(&file), &[]).await;
    Setup {
        bus,
        hec,
        file,
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
    // Each rejected route is dead-lettered with the answer as the reason.
    let letters = dead_letters(&s.bus, 2).await;
    let mut errors: Vec<String> = letters
        .iter()
        .map(|m| header(m, HEADER_DLQ_ERROR))
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            "rejected: HTTP 400: invalid_payload",
            r#"rejected: HTTP 400: {"status":"invalid event","message":"Event object is invalid","errors":["x"]}"#,
        ]
    );
    assert_eq!(
        s.reporter
            .metric(
                "opsmesh_notifications_dead_lettered_total",
                &[("reason", "rejected")]
            )
            .await,
        2.0
    );
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

/// The dead letters of the notifications, once there are `count`.
async fn dead_letters(bus: &opsmesh_runtime::bus::MemoryBus, count: usize) -> Vec<Received> {
    let dlq = topics::dlq(NOTIFICATIONS);
    eventually(
        &format!("{count} message(s) on {dlq}"),
        Duration::from_secs(20),
        || async {
            let letters = bus.snapshot(&dlq);
            (letters.len() >= count).then_some(letters)
        },
    )
    .await
}

fn header(message: &Received, name: &str) -> String {
    String::from_utf8(message.header(name).unwrap_or_default().to_vec()).unwrap()
}

/// What `opsmesh dlq replay` publishes for `letter` (the CLI runs against Kafka; this bus
/// lives in the test process): key, bytes and headers, minus the DLQ's, onto the topic.
async fn replay(bus: &opsmesh_runtime::bus::MemoryBus, letter: &Received) {
    let mut headers: Vec<(Cow<'static, str>, Cow<'static, [u8]>)> = letter
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with("opsmesh-dlq-"))
        .map(|(name, value)| (name.clone().into(), value.clone().into()))
        .collect();
    headers.push((
        "opsmesh-replayed-from".into(),
        format!("{}/{}/{}", letter.topic, letter.partition, letter.offset)
            .into_bytes()
            .into(),
    ));
    bus.publish(Outgoing {
        topic: NOTIFICATIONS.into(),
        key: String::from_utf8(letter.key.clone().unwrap()).unwrap(),
        payload: letter.payload.clone(),
        headers,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_down_past_the_budget_is_dead_lettered_and_replayed_to_that_route_once() {
    let s = setup_with("timeout = \"1s\"\nretry_budget = \"2s\"").await;
    s.pagerduty
        .go_down(Answer::new(503, "upstream connect error"));
    let mut incident = Incident::oom("ml-team-a");
    incident.alert.payload.severity = Severity::Critical;
    publish_awaiting(&s.bus, &incident).await;
    requests_of(&s.slack, 1).await;

    let letters = dead_letters(&s.bus, 1).await;
    let letter = &letters[0];
    let error = header(letter, HEADER_DLQ_ERROR);
    assert!(
        error.starts_with("retries_exhausted: 503 Service Unavailable: upstream connect error"),
        "{error}"
    );
    assert!(
        header(letter, HEADER_DLQ_ORIGIN).starts_with(&format!("{}/", topics::REMEDIATIONS)),
        "the decision it notified"
    );
    assert_eq!(header(letter, HEADER_DLQ_GROUP), "opsmesh-reporter-notify");
    assert_eq!(letter.key.as_deref(), Some(incident.id.as_bytes()));
    let record: Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(record["schema"], NOTIFICATIONS);
    assert_eq!(record["incident_id"], incident.id.as_str());
    assert_eq!(record["payload"]["channel"], "pagerduty");
    assert_eq!(record["payload"]["route"], "oncall");
    assert_eq!(record["payload"]["event"], "awaiting_approval");
    assert_eq!(record["payload"]["body"]["dedup_key"], incident.id.as_str());
    assert!(
        record["payload"]["body"].get("routing_key").is_none(),
        "the routing key is a secret: not on the bus"
    );
    let tried = s.pagerduty.requests().len();
    assert!(tried >= 3, "retried within the budget: {tried} attempts");
    assert_eq!(
        s.reporter
            .metric(
                "opsmesh_notifications_dead_lettered_total",
                &[("route", "oncall"), ("reason", "retries_exhausted")]
            )
            .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.pagerduty.requests().len(),
        tried,
        "no retry after the budget"
    );

    // PagerDuty is back; the dead letter is replayed twice (two operators at once): PagerDuty
    // gets it once, with the routing key, and the Slack route that worked hears nothing again.
    s.pagerduty.recover();
    replay(&s.bus, letter).await;
    replay(&s.bus, letter).await;
    let pages = requests_of(&s.pagerduty, tried + 1).await;
    let page = &pages[tried].body;
    assert_eq!(page["routing_key"], ROUTING_KEY);
    assert_eq!(page["event_action"], "trigger");
    assert_eq!(page["dedup_key"], incident.id.as_str());
    assert_eq!(page, &pages[0].body, "the same request as first attempted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.pagerduty.requests().len(), tried + 1, "delivered once");
    assert_eq!(
        s.slack.requests().len(),
        1,
        "only the failed route is re-sent"
    );
    assert_eq!(
        s.bus.snapshot(&topics::dlq(NOTIFICATIONS)).len(),
        1,
        "nothing dead-lettered again"
    );
    s.reporter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_still_retrying_at_shutdown_is_resumed_by_the_next_reporter() {
    // The default budget (minutes) outlasts the test: only shutdown ends the retries.
    let s = setup_with("").await;
    s.slack.go_down(Answer::new(500, "internal_error"));
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&s.bus, &incident).await;
    requests_of(&s.slack, 2).await;
    s.reporter.stop().await.unwrap();
    let tried = s.slack.requests().len();
    assert!(
        s.bus.snapshot(&topics::dlq(NOTIFICATIONS)).is_empty(),
        "not dead-lettered: the decision was left unsettled"
    );

    // The next reporter in the group is redelivered the decision and sends it.
    s.slack.recover();
    let next = RunningReporter::start_with_file(&s.bus, &s.hec, Some(&s.file), &[]).await;
    let slack = requests_of(&s.slack, tried + 1).await;
    assert!(
        slack.last().unwrap().body["text"]
            .as_str()
            .unwrap()
            .contains(&incident.id),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.slack.requests().len(), tried + 1, "sent once more");
    next.stop().await.unwrap();
}
