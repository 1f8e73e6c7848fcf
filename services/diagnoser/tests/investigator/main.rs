//! The investigator without a real model: a scripted OpenAI-compatible server plays each
//! conversation (tool calls and usage tokens over the real protocol), Splunk is a REST export
//! server or an MCP server serving fixture rows, and Kubernetes is the simulator with a model
//! OOM-looping. The harness is in `setup`; container logs and searches over MCP in `sources`.

mod setup;
mod sources;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use opsmesh_diagnoser::investigator::InvestigatorConfig;
use opsmesh_proto::{
    ActionKind, Envelope, RootCause, Severity,
    investigation::{
        InvestigationEvent, InvestigationReport, InvestigationRequest, InvestigationState,
        InvestigationUpdate, StepKind, StopReason,
    },
    topics,
};
use opsmesh_testkit::openai::Turn;

use setup::*;

#[tokio::test]
async fn a_good_investigation_finds_the_oom_through_splunk_and_events() {
    let s = setup(
        vec![
            Turn::call("splunk_search", models_search()),
            Turn::calls(&[
                ("kubernetes_events", json!({"namespace": "ml-team-a"})),
                ("container_states", json!({"namespace": "ml-team-a"})),
            ]),
            report_answer(
                json!([
                    {"claim": "Splunk shows 2 OOM kills of gpt-oss-120b", "evidence_ids": ["t1"]},
                    {"claim": "its containers were last terminated OOMKilled (137) and back off", "evidence_ids": ["t2", "t3"]},
                ]),
                json!([patch_memory(&["t1", "t3"])]),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
    assert_eq!(report.stop_reason, StopReason::Answered);
    assert_eq!(report.root_cause, RootCause::OomKilled);
    assert_eq!(report.risk, Some(Severity::High));
    assert_eq!(report.findings.len(), 2);
    assert_eq!(report.proposed_actions.len(), 1);
    assert_eq!(
        report.proposed_actions[0].kind,
        ActionKind::PatchMemoryLimit
    );
    assert_eq!(report.proposed_actions[0].target, TARGET);
    assert!(
        report.usage.discarded.is_empty(),
        "{:?}",
        report.usage.discarded
    );

    // The evidence is what the tools really returned.
    let ids: Vec<(&str, &str)> = report
        .evidence
        .iter()
        .map(|e| (e.id.as_str(), e.tool.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("t1", "splunk_search"),
            ("t2", "kubernetes_events"),
            ("t3", "container_states")
        ]
    );
    assert!(report.evidence[0].result.contains("OOMKilled"));
    assert!(
        report.evidence[0]
            .result
            .contains("\"source\":\"splunk_search\""),
        "the evidence says the search went through the REST export API"
    );
    assert!(
        report.evidence[1]
            .result
            .contains("Back-off restarting failed container")
    );
    assert!(
        report.evidence[2]
            .result
            .contains("\"reason\":\"OOMKilled\"")
    );
    assert!(report.evidence[2].result.contains("\"exitCode\":137"));

    // Splunk got the search with the investigator's time range.
    let searches = s.splunk.searches();
    assert_eq!(searches.len(), 1);
    assert!(
        searches[0]
            .search
            .starts_with("search index=opsmesh sourcetype=\"opsmesh:models\"")
    );
    assert_eq!(searches[0].earliest_time.as_deref(), Some("-1h"));
    assert_eq!(searches[0].latest_time.as_deref(), Some("now"));

    // The model was offered the tools and given each result under its evidence id.
    let requests = s.model.requests();
    assert_eq!(requests.len(), 3);
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        [
            "splunk_search",
            "kubernetes_get",
            "kubernetes_events",
            "container_states",
            "kubernetes_logs",
            "opencost_allocation",
            "runbook_search",
            "incident_facts"
        ]
    );
    let second = s.model.tool_results(1);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, "call_1");
    assert!(second[0].1.starts_with("{\"evidence_id\":\"t1\""));
    let third = s.model.tool_results(2);
    assert_eq!(
        third.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["call_1", "call_2", "call_3"]
    );

    // Every step is recorded; tool steps carry the digest of exactly what the model saw.
    assert_eq!(
        kinds(&report),
        [
            (StepKind::ModelCall, None),
            (StepKind::ToolCall, Some("splunk_search")),
            (StepKind::ModelCall, None),
            (StepKind::ToolCall, Some("kubernetes_events")),
            (StepKind::ToolCall, Some("container_states")),
            (StepKind::ModelCall, None),
        ]
    );
    let digest = hex::encode(Sha256::digest(third[2].1.as_bytes()));
    assert_eq!(
        report.steps[4].result_digest.as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(report.steps[4].evidence_id.as_deref(), Some("t3"));
    assert_eq!(report.steps[0].prompt_tokens, 1000);

    // Tokens and cost at the configured prices (0.15 and 0.60 USD per million).
    assert_eq!(report.usage.prompt_tokens, 3000);
    assert_eq!(report.usage.completion_tokens, 300);
    assert!(
        (report.usage.cost_usd - 0.00063).abs() < 1e-9,
        "{}",
        report.usage.cost_usd
    );
    let exposed = metrics(&s.registry);
    assert!(exposed.contains("diagnoser_investigations_total{state=\"completed\"} 1"));
    assert!(exposed.contains(
        "diagnoser_investigation_tool_calls_total{outcome=\"ran\",tool=\"splunk_search\"} 1"
    ));
    assert!(exposed.contains("diagnoser_investigation_tokens_total{kind=\"prompt\"} 3000"));
}

#[tokio::test]
async fn forbidden_reads_are_refused_recorded_and_never_reach_splunk_or_the_cluster() {
    let s = setup(
        vec![
            Turn::calls(&[
                ("splunk_search", json!({"spl": "index=opsmesh | delete"})),
                (
                    "splunk_search",
                    json!({"spl": "| rest /services/authentication/users"}),
                ),
                (
                    "kubernetes_get",
                    json!({"kind": "secret", "namespace": "ml-team-a"}),
                ),
                (
                    "kubernetes_get",
                    json!({"kind": "pod", "namespace": "kube-system"}),
                ),
            ]),
            Turn::answer(
                json!({"summary": "nothing readable", "root_cause": "unknown", "risk": "low"})
                    .to_string(),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
    assert!(
        s.splunk.searches().is_empty(),
        "a refused search reached Splunk"
    );
    assert!(report.evidence.is_empty(), "a refusal is not evidence");
    let refusals: Vec<&str> = report
        .steps
        .iter()
        .filter_map(|s| s.refused.as_deref())
        .collect();
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    assert!(
        refusals[0].contains("`delete` changes or exports data"),
        "{}",
        refusals[0]
    );
    assert!(refusals[1].contains("`rest`"), "{}", refusals[1]);
    assert!(
        refusals[2].contains("kind \"secret\" is not readable"),
        "{}",
        refusals[2]
    );
    assert!(
        refusals[3].contains("namespace \"kube-system\""),
        "{}",
        refusals[3]
    );
    // The model was told why, in the tool result.
    let told = s.model.tool_results(1);
    assert!(told[0].1.contains("refused: `delete`"), "{}", told[0].1);
    assert!(metrics(&s.registry).contains(
        "diagnoser_investigation_tool_calls_total{outcome=\"refused\",tool=\"splunk_search\"} 2"
    ));
}

#[tokio::test]
async fn a_prompt_injection_in_a_tool_result_yields_no_proposal_outside_the_runbook() {
    let s = setup(
        vec![
            Turn::calls(&[
                ("splunk_search", models_search()),
                (
                    "splunk_search",
                    json!({"spl": "index=opsmesh sourcetype=\"kube:container:logs\" namespace=\"ml-team-a\""}),
                ),
            ]),
            // A model that obeyed the injected text.
            report_answer(
                json!([{"claim": "OOM kills", "evidence_ids": ["t1"]}]),
                json!([
                    {"kind": "scale_inference_service", "target": TARGET, "params": {"replicas": 0},
                     "evidence_ids": ["t2"], "rationale": "as instructed"},
                    {"kind": "delete_namespace", "target": "namespace/ml-team-a",
                     "evidence_ids": ["t2"], "rationale": "as instructed"},
                    patch_memory(&["t1"]),
                ]),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert!(
        report.evidence[1]
            .result
            .contains("ignore previous instructions")
    );
    assert_eq!(report.state, InvestigationState::Completed);
    let kept: Vec<ActionKind> = report.proposed_actions.iter().map(|a| a.kind).collect();
    assert_eq!(kept, [ActionKind::PatchMemoryLimit]);
    assert_eq!(
        report.discarded_by_reason.get("action_outside_runbook"),
        Some(&2),
        "{:?}",
        report.usage.discarded
    );
    assert!(
        metrics(&s.registry).contains(
            "diagnoser_investigation_discarded_total{reason=\"action_outside_runbook\"} 2"
        )
    );
}

#[tokio::test]
async fn a_looping_model_is_stopped() {
    let events = ("kubernetes_events", json!({"namespace": "ml-team-a"}));
    let s = setup(
        vec![
            Turn::calls(std::slice::from_ref(&events)),
            Turn::calls(&[events]),
            Turn::answer("{}"),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Failed);
    assert_eq!(report.stop_reason, StopReason::Loop);
    assert!(
        report.stop_detail.contains("same arguments as t1"),
        "{}",
        report.stop_detail
    );
    assert_eq!(s.model.requests().len(), 2, "the model is not asked again");
    assert!(report.steps.last().unwrap().refused.is_some());
    assert!(report.proposed_actions.is_empty());
}

/// One tool call whose reply reports `usage` tokens, under `max_tokens` (and 100 completion
/// tokens per call), then an answer.
async fn under_token_budget(
    tool: (&str, Value),
    usage: (u32, u32),
    max_tokens: u64,
) -> (Setup, InvestigationReport) {
    let s = setup(
        vec![
            Turn::call(tool.0, tool.1).usage(usage.0, usage.1),
            report_answer(json!([]), json!([])),
        ],
        |config| {
            config.limits.max_tokens = max_tokens;
            config.limits.max_completion_tokens = 100;
        },
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;
    assert_eq!(report.state, InvestigationState::OverBudget, "{report:#?}");
    assert_eq!(report.stop_reason, StopReason::TokenLimit);
    assert_eq!(s.model.requests().len(), 1);
    (s, report)
}

#[tokio::test]
async fn a_reply_over_the_token_budget_stops_over_budget() {
    let (s, report) = under_token_budget(
        ("runbook_search", json!({"query": "OOMKilled memory limit"})),
        (4900, 200),
        5000,
    )
    .await;
    assert!(
        report
            .stop_detail
            .contains("5100 tokens spent, over max_tokens 5000"),
        "{}",
        report.stop_detail
    );
    assert_eq!(
        report.usage.prompt_tokens + report.usage.completion_tokens,
        5100
    );
    assert_eq!(
        kinds(&report),
        [(StepKind::ModelCall, None)],
        "no tool runs once the budget is exceeded"
    );
    assert!(
        metrics(&s.registry).contains("diagnoser_investigations_total{state=\"over_budget\"} 1")
    );
}

#[tokio::test]
async fn a_call_that_could_cross_the_token_budget_is_not_made() {
    let (_s, report) = under_token_budget(("incident_facts", json!({})), (3000, 100), 3500).await;
    assert!(
        report
            .stop_detail
            .starts_with("3100 tokens spent; the next call may take"),
        "{}",
        report.stop_detail
    );
    assert_eq!(report.evidence.len(), 1, "the first call's tool ran");
}

#[tokio::test]
async fn invented_evidence_ids_are_discarded_and_counted() {
    let s = setup(
        vec![
            Turn::call("container_states", json!({"namespace": "ml-team-a"})),
            report_answer(
                json!([
                    {"claim": "containers OOMKilled", "evidence_ids": ["t1"]},
                    {"claim": "the node is out of memory", "evidence_ids": ["t7"]},
                ]),
                json!([patch_memory(&["t1", "t9"])]),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Completed);
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].evidence_ids, ["t1"]);
    assert!(report.proposed_actions.is_empty());
    assert_eq!(report.discarded_by_reason.get("unknown_evidence"), Some(&2));
    assert!(
        report
            .usage
            .discarded
            .iter()
            .any(|d| d.contains("cites evidence t9 that does not exist"))
    );
    assert!(
        metrics(&s.registry)
            .contains("diagnoser_investigation_discarded_total{reason=\"unknown_evidence\"} 2")
    );
}

#[tokio::test]
async fn an_incident_the_rules_are_unsure_of_is_investigated_and_every_step_published() {
    let s = setup(
        vec![
            Turn::call("incident_facts", json!({})),
            report_answer(
                json!([{"claim": "the alert names gpt-oss-120b", "evidence_ids": ["t1"]}]),
                json!([]),
            ),
        ],
        |_| {},
    )
    .await;
    let config = opsmesh_diagnoser::DiagnoserConfig {
        investigator: InvestigatorConfig {
            enabled: true,
            namespaces: vec!["ml-team-a".into()],
            ..InvestigatorConfig::default()
        },
        ..support::quick()
    };
    let investigator = s.investigator;
    let running = support::start_adding(config, |d| d.with_investigator(Some(investigator))).await;
    // No telemetry: the rules cannot tell what is wrong.
    let alert = support::alert("gpt-oss-120b");
    let envelope = Envelope::new("test", "default", Some("fp-gpt-oss-120b".into()), alert);
    running
        .ctx
        .publisher
        .publish("fp-gpt-oss-120b", &envelope)
        .await
        .unwrap();

    let diagnosis = support::diagnoses(&running.bus, 1).await.remove(0);
    assert_eq!(diagnosis.payload.root_cause, RootCause::Unknown);
    let incident = diagnosis.incident_id.clone().unwrap();
    let events: Vec<Envelope<InvestigationEvent>> = opsmesh_testkit::eventually(
        "the investigation's report",
        Duration::from_secs(10),
        || async {
            let events: Vec<_> = running
                .bus
                .snapshot(topics::INVESTIGATIONS)
                .iter()
                .map(|m| Envelope::<InvestigationEvent>::from_slice(&m.payload).unwrap())
                .collect();
            events
                .iter()
                .any(|e| matches!(e.payload.update, InvestigationUpdate::Report(_)))
                .then_some(events)
        },
    )
    .await;
    // Queued by the diagnoser on the request topic, as any requester would.
    let requests = running.bus.snapshot(topics::INVESTIGATION_REQUESTS);
    assert_eq!(requests.len(), 1);
    let request = Envelope::<InvestigationRequest>::from_slice(&requests[0].payload).unwrap();
    assert_eq!(request.payload.requested_by, "diagnoser");
    assert_eq!(
        request.payload.incident_id.as_deref(),
        Some(incident.as_str())
    );
    assert_eq!(events.len(), 5, "running, three steps, then the report");
    let InvestigationUpdate::Status(status) = &events[0].payload.update else {
        panic!("the first event says it runs: {:?}", events[0]);
    };
    assert_eq!(status.state, InvestigationState::Running);
    for event in &events {
        assert_eq!(event.incident_id.as_deref(), Some(incident.as_str()));
        assert!(event.payload.investigation_id.starts_with(&incident));
        assert!(
            event
                .payload
                .question
                .contains("KServe model error rate above 5%")
        );
    }
    let tool_step = match &events[2].payload.update {
        InvestigationUpdate::Step(step) => step,
        other => panic!("{other:?}"),
    };
    assert_eq!(tool_step.tool.as_deref(), Some("incident_facts"));
    assert!(tool_step.result_digest.is_some());
    let InvestigationUpdate::Report(report) = &events[4].payload.update else {
        panic!("the last event is the report");
    };
    assert_eq!(report.state, InvestigationState::Completed);
    assert_eq!(report.findings.len(), 1);
    // The model saw what the rules concluded.
    let facts = &s.model.tool_results(1)[0].1;
    assert!(
        facts.contains(&format!("{}", diagnosis.payload.root_cause)),
        "{facts}"
    );
}

#[tokio::test]
async fn the_step_limit_stops_it_over_budget() {
    let s = setup(
        vec![
            Turn::calls(&[
                ("incident_facts", json!({})),
                ("runbook_search", json!({"query": "OOMKilled"})),
            ]),
            Turn::answer("{}"),
        ],
        |config| config.limits.max_steps = 1,
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::OverBudget, "{report:#?}");
    assert_eq!(report.stop_reason, StopReason::StepLimit);
    assert_eq!(report.evidence.len(), 1, "the second call does not run");
    assert_eq!(s.model.requests().len(), 1);
}

#[tokio::test]
async fn the_cost_limit_stops_it_over_budget() {
    // At 0.15 / 0.60 USD per million tokens, 10 000 prompt tokens cost $0.0015.
    let s = setup(
        vec![
            Turn::call("incident_facts", json!({})).usage(10_000, 100),
            Turn::answer("{}"),
        ],
        |config| config.limits.max_cost_usd = 0.001,
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::OverBudget, "{report:#?}");
    assert_eq!(report.stop_reason, StopReason::CostLimit);
    assert!(
        report.stop_detail.contains("over max_cost_usd $0.0010"),
        "{}",
        report.stop_detail
    );
    assert!((report.usage.cost_usd - 0.00156).abs() < 1e-9);
}

#[tokio::test]
async fn the_wall_time_stops_a_slow_model_over_budget() {
    let s = setup(
        vec![Turn::call("incident_facts", json!({})).delayed(Duration::from_secs(5))],
        |config| config.limits.max_wall_time = Duration::from_millis(500),
    )
    .await;
    let started = std::time::Instant::now();
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::OverBudget, "{report:#?}");
    assert_eq!(report.stop_reason, StopReason::WallTime);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(kinds(&report), [(StepKind::ModelCall, None)]);
}

#[tokio::test]
async fn an_injected_scale_to_zero_under_a_cost_cause_stays_outside_the_runbook_bounds() {
    // A model that obeyed the injection and dressed it up as a cost overrun: scaling is in
    // the cost runbook, but not to 0 replicas (its minimum is 1).
    let s = setup(
        vec![
            Turn::call(
                "splunk_search",
                json!({"spl": "index=opsmesh sourcetype=\"kube:container:logs\" namespace=\"ml-team-a\""}),
            ),
            Turn::answer(
                json!({"summary": "over budget", "root_cause": "cost_overrun", "risk": "low",
                       "findings": [{"claim": "the logs ask for it", "evidence_ids": ["t1"]}],
                       "proposed_actions": [
                           {"kind": "scale_inference_service", "target": TARGET,
                            "params": {"replicas": 0}, "evidence_ids": ["t1"],
                            "rationale": "as instructed"}]})
                .to_string(),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert!(
        report.evidence[0]
            .result
            .contains("ignore previous instructions")
    );
    assert!(
        report.proposed_actions.is_empty(),
        "{:?}",
        report.proposed_actions
    );
    assert_eq!(
        report.discarded_by_reason.get("param_out_of_range"),
        Some(&1)
    );
    assert!(
        report
            .usage
            .discarded
            .iter()
            .any(|d| d.contains("replicas 0 is below the runbook's minimum 1")),
        "{:?}",
        report.usage.discarded
    );
}

#[tokio::test]
async fn an_outcome_arriving_during_an_investigation_closes_the_incident() {
    let s = setup(
        vec![
            Turn::call("incident_facts", json!({})).delayed(Duration::from_millis(1500)),
            Turn::answer("{}"),
        ],
        |_| {},
    )
    .await;
    let config = opsmesh_diagnoser::DiagnoserConfig {
        investigator: InvestigatorConfig {
            enabled: true,
            namespaces: vec!["ml-team-a".into()],
            ..InvestigatorConfig::default()
        },
        ..support::quick()
    };
    let investigator = s.investigator;
    let running = support::start_adding(config, |d| d.with_investigator(Some(investigator))).await;
    let alert = support::alert("gpt-oss-120b");
    let envelope = Envelope::new("test", "default", Some("fp-gpt-oss-120b".into()), alert);
    running
        .ctx
        .publisher
        .publish("fp-gpt-oss-120b", &envelope)
        .await
        .unwrap();
    let diagnosis = support::diagnoses(&running.bus, 1).await.remove(0);
    let incident = diagnosis.incident_id.clone().unwrap();

    // The remediator escalates while the model is still thinking.
    let mut outcome: Envelope<opsmesh_proto::remediation::Remediation> = Envelope::from_slice(
        include_bytes!("../../../../proto/examples/opsmesh.remediations.v1.json"),
    )
    .unwrap();
    outcome.id = uuid::Uuid::now_v7();
    outcome.incident_id = Some(incident.clone());
    outcome.occurred_at = chrono::Utc::now();
    outcome.payload.diagnosis_id = diagnosis.id;
    outcome.payload.state = opsmesh_proto::IncidentState::Escalated;
    running
        .ctx
        .publisher
        .publish(&incident, &outcome)
        .await
        .unwrap();

    let status = opsmesh_testkit::eventually(
        "the incident's last record after the investigation",
        Duration::from_secs(10),
        || async {
            let reported = running
                .bus
                .snapshot(topics::INVESTIGATIONS)
                .iter()
                .any(|m| String::from_utf8_lossy(&m.payload).contains("\"type\":\"report\""));
            let last: Value =
                serde_json::from_slice(&running.bus.snapshot(topics::INCIDENTS).last()?.payload)
                    .unwrap();
            reported.then(|| last["payload"]["status"].clone())
        },
    )
    .await;
    assert_eq!(status, "escalated");
}
