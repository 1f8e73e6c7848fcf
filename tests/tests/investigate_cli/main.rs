//! `opsmesh investigate` as a user runs it, against a real Kafka-protocol broker (tansu), with
//! the test playing the diagnoser's investigator on the topics: it takes the request off
//! `opsmesh.investigation-requests.v1` and answers on `opsmesh.investigations.v1` (running, a
//! step, the report) under the same investigation id. What is asserted is what the user sees:
//! the lines printed as the answers come, the JSON, and the exit status. `with_diagnoser` runs
//! it against the real diagnoser process instead, killed and restarted mid-investigation.

mod support;
mod with_diagnoser;

use std::sync::Arc;

use serde_json::{Value, json};

use opsmesh_proto::{
    ActionKind, Envelope, RootCause, Severity,
    diagnosis::{ActionProposal, LlmUsage},
    investigation::{
        Finding, InvestigationEvent, InvestigationReport, InvestigationRequest, InvestigationState,
        InvestigationStatus, InvestigationStep, InvestigationUpdate, StepKind, StopReason,
        ToolEvidence,
    },
    topics::INVESTIGATION_REQUESTS,
};
use opsmesh_runtime::{
    Bus, Publisher, Received,
    bus::{ReadEvent, TopicReader},
    metrics::{BusMetrics, new_registry},
};
use opsmesh_tests::broker::Broker;

use support::{LIMIT, Running, broker, run, text};

const QUESTION: &str = "Why does ml-team-a cost so much?";
const NAMESPACE: &str = "ml-team-a";
const SPL: &str = "index=opsmesh sourcetype=\"opsmesh:costs\" namespace=ml-team-a | stats sum(hourly_cost_usd) by name";

/// The investigator's side, on the same topics.
struct Investigator {
    requests: Box<dyn TopicReader>,
    publisher: Publisher,
}

impl Investigator {
    async fn start(broker: &Broker) -> Self {
        let bus = Arc::new(broker.bus());
        Self {
            requests: bus.read_topic(INVESTIGATION_REQUESTS).await.unwrap(),
            publisher: Publisher::new(bus, BusMetrics::new(&new_registry())),
        }
    }

    /// The next request on the queue, with the message it came in.
    async fn next_request(&mut self) -> (Received, Envelope<InvestigationRequest>) {
        loop {
            let event = tokio::time::timeout(LIMIT, self.requests.next())
                .await
                .expect("a request within the limit")
                .unwrap();
            if let ReadEvent::Record(message) = event {
                let envelope = Envelope::from_slice(&message.payload).expect("a request envelope");
                return (message, envelope);
            }
        }
    }

    async fn answer(&self, request: &InvestigationRequest, update: InvestigationUpdate) {
        let event = InvestigationEvent {
            investigation_id: request.investigation_id.clone(),
            question: request
                .question
                .clone()
                .unwrap_or_else(|| "Why did the incident happen?".into()),
            namespace: request.namespace.clone(),
            update,
        };
        let key = request
            .incident_id
            .as_deref()
            .unwrap_or(&request.investigation_id);
        let envelope = Envelope::new(
            "opsmesh-diagnoser",
            "test",
            request.incident_id.clone(),
            event,
        );
        self.publisher.publish(key, &envelope).await.unwrap();
    }
}

fn status(state: InvestigationState, detail: &str) -> InvestigationUpdate {
    InvestigationUpdate::Status(InvestigationStatus {
        state,
        requested_by: "cli:alice".into(),
        detail: detail.into(),
    })
}

fn search_step() -> InvestigationStep {
    InvestigationStep {
        step: 2,
        kind: StepKind::ToolCall,
        tool: Some("splunk_search".into()),
        arguments: Some(json!({"spl": SPL, "earliest": "-1h"})),
        evidence_id: Some("t1".into()),
        result_digest: Some("9f2c".into()),
        refused: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        latency_ms: 420,
        cost_usd: 0.0,
    }
}

fn report(state: InvestigationState, stop_reason: StopReason) -> InvestigationUpdate {
    InvestigationUpdate::Report(Box::new(InvestigationReport {
        state,
        stop_reason,
        stop_detail: "answered after 3 steps".into(),
        summary: Some("gpt-oss-120b runs 4 GPU replicas around the clock".into()),
        findings: vec![Finding {
            claim: "gpt-oss-120b costs $50 an hour, 80% of the namespace".into(),
            evidence_ids: vec!["t1".into()],
        }],
        root_cause: RootCause::CostOverrun,
        risk: Some(Severity::Medium),
        proposed_actions: vec![ActionProposal {
            kind: ActionKind::AdviseCapacity,
            target: "inferenceservice/ml-team-a/gpt-oss-120b".into(),
            params: Default::default(),
            evidence_ids: vec!["t1".into()],
            rationale: "scale down off hours".into(),
        }],
        evidence: vec![ToolEvidence {
            id: "t1".into(),
            tool: "splunk_search".into(),
            arguments: json!({"spl": SPL, "earliest": "-1h"}),
            result: "name,hourly_cost_usd\ngpt-oss-120b,50".into(),
        }],
        steps: vec![search_step()],
        usage: LlmUsage {
            used: true,
            model: Some("test-model".into()),
            prompt_tokens: 3100,
            completion_tokens: 240,
            cost_usd: 0.0006,
            discarded: vec![],
        },
        discarded_by_reason: Default::default(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_waited_for_prints_each_answer_as_it_comes_then_the_cited_report() {
    let broker = broker().await;
    let mut investigator = Investigator::start(&broker).await;
    let mut cli = Running::start(
        &broker,
        &["--question", QUESTION, "--namespace", NAMESPACE, "--wait"],
    );

    let (message, envelope) = investigator.next_request().await;
    let request = envelope.payload.clone();
    let id = request.investigation_id.clone();
    assert!(
        id.len() == 36 && id.starts_with("inv-") && id[4..].chars().all(|c| c.is_ascii_hexdigit()),
        "inv-<uuid v7 simple>: {id}"
    );
    assert_eq!(
        uuid::Uuid::parse_str(&id[4..]).unwrap().get_version_num(),
        7
    );
    assert_eq!(request.question.as_deref(), Some(QUESTION));
    assert_eq!(request.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(request.requested_by, "cli:alice");
    assert_eq!((request.incident_id, request.facts), (None, None));
    assert_eq!(envelope.incident_id, None);
    assert_eq!(
        message.key.as_deref(),
        Some(id.as_bytes()),
        "keyed by its id"
    );
    assert_eq!(
        message.header("opsmesh-schema"),
        Some(INVESTIGATION_REQUESTS.as_bytes())
    );

    assert_eq!(cli.line_with("queued").await, format!("{id} queued"));
    assert_eq!(
        cli.line_with("splunk:").await.trim(),
        format!(
            "splunk: index=opsmesh sourcetype=\"opsmesh:investigation\" investigation_id=\"{id}\""
        )
    );
    // Each answer is printed before the next one is given.
    investigator
        .answer(&envelope.payload, status(InvestigationState::Running, ""))
        .await;
    assert_eq!(cli.line_with("running").await, "running");
    investigator
        .answer(&envelope.payload, InvestigationUpdate::Step(search_step()))
        .await;
    let step = cli.line_with("step 2").await;
    assert!(
        step.contains("splunk_search earliest=-1h spl=\"index=opsmesh")
            && step.ends_with("→ t1  420 ms"),
        "{step}"
    );
    investigator
        .answer(
            &envelope.payload,
            report(InvestigationState::Completed, StopReason::Answered),
        )
        .await;
    let (exit, stdout, stderr) = cli.finish().await;
    assert_eq!(exit.code(), Some(0), "{stdout}\n{stderr}");
    for expected in [
        "completed (answered): answered after 3 steps",
        "root cause: cost_overrun   risk: medium",
        "summary: gpt-oss-120b runs 4 GPU replicas around the clock",
        "  - gpt-oss-120b costs $50 an hour, 80% of the namespace\n      t1 splunk_search earliest=-1h spl=\"index=opsmesh",
        "  - advise_capacity inferenceservice/ml-team-a/gpt-oss-120b (cites t1): scale down off hours",
        "tokens: 3100 prompt + 240 completion in 1 step(s); cost $0.0006 (model test-model)",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_request_exits_2_naming_the_field_and_publishes_nothing() {
    let broker = broker().await;
    let long = "x".repeat(2001);
    for (args, field) in [
        (
            vec!["--question", "  ", "--wait"],
            "question: must not be empty",
        ),
        (
            vec!["--namespace", NAMESPACE],
            "question: needed when no incident_id",
        ),
        (
            vec!["--question", &long],
            "question: 2001 characters, at most 2000",
        ),
        (
            vec!["--question", QUESTION, "--namespace", "ML_Team"],
            "namespace: \"ML_Team\" is not a namespace name",
        ),
    ] {
        let output = run(&broker, &args).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid investigation request: {field}")),
            "{args:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?} printed an id");
    }
    let ends = broker
        .bus()
        .end_offsets(INVESTIGATION_REQUESTS)
        .await
        .unwrap();
    assert!(ends.values().all(|end| *end == 0), "published: {ends:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_finds_a_queued_investigation_of_an_incident_and_later_its_report() {
    let broker = broker().await;
    let mut investigator = Investigator::start(&broker).await;
    let asked = run(&broker, &["inc-7f3a"]).await;
    assert_eq!(asked.status.code(), Some(0), "{}", text(&asked.stderr));
    let (message, envelope) = investigator.next_request().await;
    let id = envelope.payload.investigation_id.clone();
    assert_eq!(
        text(&asked.stdout).lines().next(),
        Some(format!("{id} queued").as_str())
    );
    assert!(text(&asked.stdout).contains(&format!("status: opsmesh investigate --status {id}")));
    assert_eq!(envelope.payload.incident_id.as_deref(), Some("inc-7f3a"));
    assert_eq!(envelope.payload.question, None);
    assert_eq!(envelope.incident_id.as_deref(), Some("inc-7f3a"));
    assert_eq!(message.key.as_deref(), Some(id.as_bytes()));

    // Only the request exists: queued.
    let queued = run(&broker, &["--status", &id]).await;
    assert_eq!(queued.status.code(), Some(0), "{}", text(&queued.stderr));
    let stdout = text(&queued.stdout);
    assert!(stdout.starts_with(&format!("{id} queued\n")), "{stdout}");
    assert!(stdout.contains("incident: inc-7f3a\n"), "{stdout}");
    assert!(stdout.contains("requested by: cli:alice\n"), "{stdout}");

    investigator
        .answer(&envelope.payload, status(InvestigationState::Running, ""))
        .await;
    investigator
        .answer(&envelope.payload, InvestigationUpdate::Step(search_step()))
        .await;
    let running = text(&run(&broker, &["--status", &id]).await.stdout);
    assert!(running.starts_with(&format!("{id} running\n")), "{running}");
    assert!(running.contains("so far: 1 step(s), 0 tokens"), "{running}");

    investigator
        .answer(
            &envelope.payload,
            report(InvestigationState::Completed, StopReason::Answered),
        )
        .await;
    let completed = run(&broker, &["--status", &id]).await;
    let stdout = text(&completed.stdout);
    assert_eq!(completed.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with(&format!("{id} completed\n")), "{stdout}");
    assert!(stdout.contains("root cause: cost_overrun"), "{stdout}");
    let json = run(&broker, &["--status", &id, "--json"]).await;
    let standing: Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    assert_eq!(standing["investigation_id"], id.as_str());
    assert_eq!(standing["state"], "completed");
    assert_eq!(standing["incident_id"], "inc-7f3a");
    assert_eq!(
        standing["report"]["findings"][0]["evidence_ids"],
        json!(["t1"])
    );
    assert_eq!(standing["report"]["usage"]["cost_usd"], 0.0006);

    let unknown = run(&broker, &["--status", "inv-0000"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("no investigation inv-0000 on"),
        "{}",
        text(&unknown.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exits_3_over_budget_4_and_not_ended_in_time_5() {
    let broker = broker().await;
    let mut investigator = Investigator::start(&broker).await;

    let cli = Running::start(&broker, &["--question", QUESTION, "--wait", "--json"]);
    let (_, envelope) = investigator.next_request().await;
    investigator
        .answer(
            &envelope.payload,
            status(
                InvestigationState::Failed,
                "the investigator is not enabled (diagnoser.investigator.enabled)",
            ),
        )
        .await;
    let (exit, stdout, stderr) = cli.finish().await;
    assert_eq!(exit.code(), Some(3), "{stdout}\n{stderr}");
    let standing: Value = serde_json::from_str(&stdout).expect("stdout is the JSON alone");
    assert_eq!(standing["state"], "failed");
    assert_eq!(
        standing["detail"],
        "the investigator is not enabled (diagnoser.investigator.enabled)"
    );
    assert!(
        stderr.contains("failed: the investigator is not enabled"),
        "{stderr}"
    );

    let asked = run(&broker, &["--question", QUESTION]).await;
    assert_eq!(asked.status.code(), Some(0));
    let (_, envelope) = investigator.next_request().await;
    investigator
        .answer(
            &envelope.payload,
            report(InvestigationState::OverBudget, StopReason::TokenLimit),
        )
        .await;
    let id = &envelope.payload.investigation_id;
    let over = run(&broker, &["--status", id, "--wait"]).await;
    assert_eq!(over.status.code(), Some(4), "{}", text(&over.stderr));
    assert!(text(&over.stdout).contains("over_budget (token_limit)"));

    let late = run(
        &broker,
        &["--question", QUESTION, "--wait", "--timeout", "3s"],
    )
    .await;
    assert_eq!(late.status.code(), Some(5), "{}", text(&late.stderr));
    assert!(
        text(&late.stderr).contains("still queued after 3s"),
        "{}",
        text(&late.stderr)
    );
}
