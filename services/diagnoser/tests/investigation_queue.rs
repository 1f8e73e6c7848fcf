//! On-demand investigations through the queue: a request on
//! `opsmesh.investigation-requests.v1` is answered on `opsmesh.investigations.v1` — `running`,
//! each step, the report — or `failed` with the reason when it cannot run; a diagnoser stopped
//! mid-investigation leaves the request to the next one.

mod support;

use std::{sync::Arc, time::Duration};

use prometheus::Registry;
use serde_json::json;

use opsmesh_diagnoser::{
    DiagnoserConfig,
    investigator::{Investigator, InvestigatorConfig, Toolbox},
    llm::{Endpoint, LlmConfig},
};
use opsmesh_proto::{
    Envelope,
    investigation::{
        InvestigationEvent, InvestigationRequest, InvestigationState, InvestigationUpdate,
    },
    topics,
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{Context, bus::MemoryBus};
use opsmesh_testkit::openai::{ScriptedModel, Turn};

const KEY: &str = "sk-queue-test";

fn config() -> DiagnoserConfig {
    DiagnoserConfig {
        investigator: InvestigatorConfig {
            enabled: true,
            namespaces: vec!["ml-team-a".into()],
            ..InvestigatorConfig::default()
        },
        ..support::quick()
    }
}

/// An investigator on `model` with only the tools that need no Splunk or cluster.
fn investigator(model: &ScriptedModel, key_dir: &tempfile::TempDir) -> Investigator {
    let key_file = key_dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let llm = LlmConfig {
        base_url: model.url().into(),
        api_key_file: Some(key_file),
        model: "test-model".into(),
        timeout: Duration::from_secs(10),
        ..LlmConfig::default()
    };
    let config = config().investigator;
    let tools = Toolbox::new(&config, None, None, Arc::new(Library::built_in().unwrap())).unwrap();
    Investigator::new(
        &config,
        Arc::new(Endpoint::new(&llm).unwrap()),
        tools,
        &Registry::new(),
    )
}

fn report_turn() -> Turn {
    Turn::answer(
        json!({"summary": "the question's namespace runs one model", "root_cause": "unknown",
               "risk": "low", "findings": [
                   {"claim": "the question was about ml-team-a", "evidence_ids": ["t1"]}],
               "proposed_actions": []})
        .to_string(),
    )
}

fn request(
    id: &str,
    adjust: impl FnOnce(&mut InvestigationRequest),
) -> Envelope<InvestigationRequest> {
    let mut request = InvestigationRequest {
        investigation_id: id.into(),
        incident_id: None,
        question: Some("Why does ml-team-a cost so much since Tuesday?".into()),
        namespace: Some("ml-team-a".into()),
        requested_by: "cli:alice".into(),
        facts: None,
    };
    adjust(&mut request);
    Envelope::new(
        "opsmesh-cli",
        "default",
        request.incident_id.clone(),
        request,
    )
}

async fn ask(ctx: &Context, request: &Envelope<InvestigationRequest>) {
    ctx.publisher
        .publish(&request.payload.investigation_id, request)
        .await
        .unwrap();
}

/// The events of investigation `id` once `done` says they are complete.
async fn events_of(
    bus: &MemoryBus,
    id: &str,
    done: impl Fn(&[InvestigationEvent]) -> bool,
) -> Vec<InvestigationEvent> {
    opsmesh_testkit::eventually(
        "the investigation's events",
        Duration::from_secs(15),
        || async {
            let events: Vec<_> = bus
                .snapshot(topics::INVESTIGATIONS)
                .iter()
                .map(|m| {
                    Envelope::<InvestigationEvent>::from_slice(&m.payload)
                        .unwrap()
                        .payload
                })
                .filter(|e| e.investigation_id == id)
                .collect();
            done(&events).then_some(events)
        },
    )
    .await
}

fn has_report(events: &[InvestigationEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e.update, InvestigationUpdate::Report(_)))
}

fn failed_status(events: &[InvestigationEvent]) -> Option<String> {
    events.iter().find_map(|e| match &e.update {
        InvestigationUpdate::Status(s) if s.state == InvestigationState::Failed => {
            Some(s.detail.clone())
        }
        _ => None,
    })
}

#[tokio::test]
async fn a_question_is_taken_up_runs_and_ends_with_its_report() {
    let model = ScriptedModel::start(
        KEY,
        vec![Turn::call("incident_facts", json!({})), report_turn()],
    )
    .await;
    let keys = tempfile::tempdir().unwrap();
    let investigator = investigator(&model, &keys);
    let running =
        support::start_adding(config(), |d| d.with_investigator(Some(investigator))).await;

    // What the collector reported about the namespace reaches the model as facts.
    // (An alert about the model is diagnosed from that telemetry once it was read.)
    support::publish_oom_telemetry(&running.ctx, "gpt-oss-120b").await;
    let alert = Envelope::new("test", "default", None, support::alert("gpt-oss-120b"));
    running.ctx.publisher.publish("fp", &alert).await.unwrap();
    let diagnosis = support::diagnoses(&running.bus, 1).await.remove(0);
    assert_eq!(
        diagnosis.payload.root_cause,
        opsmesh_proto::RootCause::OomKilled
    );
    ask(&running.ctx, &request("inv-question", |_| {})).await;
    let events = events_of(&running.bus, "inv-question", has_report).await;

    let InvestigationUpdate::Status(status) = &events[0].update else {
        panic!("first comes `running`: {:?}", events[0]);
    };
    assert_eq!(status.state, InvestigationState::Running);
    assert_eq!(status.requested_by, "cli:alice");
    let InvestigationUpdate::Report(report) = &events.last().unwrap().update else {
        panic!("last comes the report");
    };
    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
    assert_eq!(report.findings.len(), 1);
    // The model read the question as the facts it may cite.
    let facts = &model.tool_results(1)[0].1;
    assert!(facts.contains("since Tuesday"), "{facts}");
    assert!(facts.contains("\"telemetry\""), "{facts}");
    assert!(facts.contains("OOMKilled"), "{facts}");
    assert_eq!(
        events[0].question,
        "Why does ml-team-a cost so much since Tuesday?"
    );
}

/// Steps are published as they are taken, not held back until the report.
#[tokio::test]
async fn each_step_is_published_while_the_investigation_goes_on() {
    let model = ScriptedModel::start(
        KEY,
        vec![
            Turn::call("incident_facts", json!({})),
            report_turn().delayed(Duration::from_secs(3)),
        ],
    )
    .await;
    let keys = tempfile::tempdir().unwrap();
    let investigator = investigator(&model, &keys);
    let running =
        support::start_adding(config(), |d| d.with_investigator(Some(investigator))).await;

    ask(&running.ctx, &request("inv-live", |_| {})).await;
    let tool_step = |e: &InvestigationEvent| matches!(&e.update, InvestigationUpdate::Step(s) if s.tool.as_deref() == Some("incident_facts"));
    let early = events_of(&running.bus, "inv-live", |e| e.iter().any(tool_step)).await;
    assert!(
        !has_report(&early),
        "the tool step came before the report: {early:?}"
    );
    let events = events_of(&running.bus, "inv-live", has_report).await;
    assert_eq!(
        events.len(),
        5,
        "running, model call, tool call, model call, report"
    );
}

#[tokio::test]
async fn requests_that_cannot_run_are_answered_failed_with_the_reason() {
    let model = ScriptedModel::start(KEY, vec![]).await;
    let keys = tempfile::tempdir().unwrap();
    let investigator = investigator(&model, &keys);
    let running =
        support::start_adding(config(), |d| d.with_investigator(Some(investigator))).await;

    let cases = [
        (
            "inv-ns",
            request("inv-ns", |r| r.namespace = Some("kube-system".into())),
            "namespace: \"kube-system\"",
        ),
        (
            "inv-empty",
            request("inv-empty", |r| r.question = Some(" ".into())),
            "question: must not be empty",
        ),
        (
            "inv-unknown",
            request("inv-unknown", |r| {
                r.question = None;
                r.incident_id = Some("fp-nothing".into());
            }),
            "incident_id: \"fp-nothing\"",
        ),
    ];
    for (_, request, _) in &cases {
        ask(&running.ctx, request).await;
    }
    for (id, _, why) in cases {
        let events = events_of(&running.bus, id, |e| failed_status(e).is_some()).await;
        assert_eq!(events.len(), 1, "{id}: only the refusal");
        let detail = failed_status(&events).unwrap();
        assert!(detail.contains(why), "{id}: {detail}");
    }
    assert!(
        model.requests().is_empty(),
        "no model call for a refused request"
    );
}

#[tokio::test]
async fn with_the_investigator_off_a_request_is_answered_not_left_queued() {
    let running = support::start(support::quick()).await;
    ask(&running.ctx, &request("inv-off", |_| {})).await;
    let events = events_of(&running.bus, "inv-off", |e| failed_status(e).is_some()).await;
    let detail = failed_status(&events).unwrap();
    assert!(
        detail.contains("diagnoser.investigator.enabled"),
        "{detail}"
    );
}

/// A diagnoser stopped while its model is still thinking leaves the request unfinished; the
/// next diagnoser in the group runs it to its report.
#[tokio::test]
async fn a_request_cut_short_by_a_stop_is_run_again_by_the_next_diagnoser() {
    let slow = ScriptedModel::start(
        KEY,
        vec![Turn::call("incident_facts", json!({})).delayed(Duration::from_secs(30))],
    )
    .await;
    let keys = tempfile::tempdir().unwrap();
    let bus = MemoryBus::new(&Default::default());
    let first = support::start_on(bus.clone(), config(), {
        let investigator = investigator(&slow, &keys);
        |d| d.with_investigator(Some(investigator))
    })
    .await;
    ask(&first.ctx, &request("inv-restart", |_| {})).await;
    events_of(&bus, "inv-restart", |e| !e.is_empty()).await;
    opsmesh_testkit::eventually("the slow model call", Duration::from_secs(10), || async {
        (!slow.requests().is_empty()).then_some(())
    })
    .await;
    drop(first);

    let model = ScriptedModel::start(
        KEY,
        vec![Turn::call("incident_facts", json!({})), report_turn()],
    )
    .await;
    let investigator = investigator(&model, &keys);
    let _second = support::start_on(bus.clone(), config(), |d| {
        d.with_investigator(Some(investigator))
    })
    .await;
    let events = events_of(&bus, "inv-restart", has_report).await;
    let InvestigationUpdate::Report(report) = &events.last().unwrap().update else {
        panic!("ends with the report");
    };
    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
}
