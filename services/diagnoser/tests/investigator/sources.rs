//! The investigator's sources beyond the REST export and events: container logs (the
//! simulator's kubelet logs through kube-rs), Splunk searches through the Splunk MCP Server
//! double, OpenCost and the Argo CD Application.

use serde_json::json;

use opsmesh_proto::{
    ActionKind, RootCause,
    investigation::{InvestigationState, StepKind},
};
use opsmesh_testkit::openai::Turn;

use super::setup::*;

#[tokio::test]
async fn the_previous_log_of_an_oom_killed_pod_is_read_and_cited() {
    let pod = predictor_pod();
    let s = setup(
        vec![
            Turn::call(
                "container_states",
                json!({"namespace": "ml-team-a", "pod": pod}),
            ),
            Turn::call(
                "kubernetes_logs",
                json!({"namespace": "ml-team-a", "pod": pod, "previous": true, "tail_lines": 3}),
            ),
            report_answer(
                json!([
                    {"claim": "the predictor was last terminated OOMKilled", "evidence_ids": ["t1"]},
                    {"claim": "it was killed while loading its weights (shard 3/4)", "evidence_ids": ["t2"]},
                ]),
                json!([patch_memory(&["t1", "t2"])]),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
    assert_eq!(report.root_cause, RootCause::OomKilled);
    assert_eq!(report.findings.len(), 2, "{:?}", report.usage.discarded);
    assert_eq!(report.findings[1].evidence_ids, ["t2"]);
    assert_eq!(
        report.proposed_actions[0].kind,
        ActionKind::PatchMemoryLimit
    );
    let logs = &report.evidence[1];
    assert_eq!(logs.tool, "kubernetes_logs");
    assert!(logs.result.contains("\"previous\":true"), "{}", logs.result);
    assert!(logs.result.contains("\"tail_lines\":3"), "{}", logs.result);
    assert!(
        logs.result
            .contains("Loading safetensors checkpoint shards:  75% Completed | 3/4\"]"),
        "the log ends mid-load: {}",
        logs.result
    );
    // The model read exactly what is cited.
    let told = s.model.tool_results(2);
    assert_eq!(told.last().unwrap().1, logs.result);
    assert!(metrics(&s.registry).contains(
        "diagnoser_investigation_tool_calls_total{outcome=\"ran\",tool=\"kubernetes_logs\"} 1"
    ));
}

#[tokio::test]
async fn log_reads_are_bounded_and_refusals_go_back_to_the_model() {
    let pod = predictor_pod();
    let s = setup(
        vec![
            Turn::calls(&[
                (
                    "kubernetes_logs",
                    json!({"namespace": "kube-system", "pod": "coredns-0"}),
                ),
                (
                    "kubernetes_logs",
                    json!({"namespace": "ml-team-a", "pod": pod, "container": "sidecar"}),
                ),
                (
                    "kubernetes_logs",
                    json!({"namespace": "ml-team-a", "pod": pod, "previous": true, "tail_lines": 100000}),
                ),
            ]),
            Turn::answer(
                json!({"summary": "logs read", "root_cause": "unknown", "risk": "low"}).to_string(),
            ),
        ],
        |config| {
            config.logs.default_tail_lines = 2;
            config.logs.max_tail_lines = 4;
            config.logs.max_bytes = 200;
        },
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
    let tool_steps: Vec<_> = report
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::ToolCall)
        .collect();
    assert_eq!(tool_steps.len(), 3);
    let outside = tool_steps[0].refused.as_deref().unwrap_or_default();
    assert!(outside.contains("namespace \"kube-system\""), "{outside}");
    let unknown = tool_steps[1].refused.as_deref().unwrap_or_default();
    assert_eq!(
        unknown,
        format!("Kubernetes: container sidecar is not valid for pod {pod} (400)")
    );
    let told = s.model.tool_results(1);
    assert!(
        told[1].1.contains("container sidecar is not valid"),
        "{}",
        told[1].1
    );

    // 100 000 lines asked, 4 allowed, and no more than 200 bytes.
    assert_eq!(report.evidence.len(), 1, "refusals are not evidence");
    let result: serde_json::Value = serde_json::from_str(&report.evidence[0].result).unwrap();
    let logs = &result["result"];
    assert_eq!(logs["tail_lines"], 4);
    assert_eq!(logs["bytes_limited"], true);
    let lines = logs["lines"].as_array().unwrap();
    let bytes: usize = lines.iter().map(|l| l.as_str().unwrap().len() + 1).sum();
    assert!(lines.len() <= 4 && bytes <= 201, "{lines:?}");
    let exposed = metrics(&s.registry);
    assert!(exposed.contains(
        "diagnoser_investigation_tool_calls_total{outcome=\"refused\",tool=\"kubernetes_logs\"} 1"
    ));
    assert!(exposed.contains(
        "diagnoser_investigation_tool_calls_total{outcome=\"failed\",tool=\"kubernetes_logs\"} 1"
    ));
}

#[tokio::test]
async fn a_search_through_the_splunk_mcp_server_finds_the_oom() {
    let s = setup_via(
        Via::Mcp,
        vec![
            Turn::call("splunk_search", models_search()),
            report_answer(
                json!([{"claim": "Splunk shows 2 OOM kills of gpt-oss-120b", "evidence_ids": ["t1"]}]),
                json!([patch_memory(&["t1"])]),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
    assert_eq!(report.root_cause, RootCause::OomKilled);
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.proposed_actions.len(), 1);
    let evidence = &report.evidence[0];
    assert_eq!(evidence.tool, "splunk_search");
    assert!(evidence.result.contains("OOMKilled"), "{}", evidence.result);
    assert!(
        evidence.result.contains("\"source\":\"splunk_mcp\""),
        "{}",
        evidence.result
    );
    // The guarded search, with the investigator's time range, went to the MCP server only.
    let searches = s.mcp.searches();
    assert_eq!(searches.len(), 1);
    assert!(
        searches[0]
            .search
            .starts_with("search index=opsmesh sourcetype=\"opsmesh:models\""),
        "{}",
        searches[0].search
    );
    assert_eq!(searches[0].earliest_time.as_deref(), Some("-1h"));
    assert_eq!(searches[0].latest_time.as_deref(), Some("now"));
    assert!(
        s.splunk.searches().is_empty(),
        "the REST export was not used"
    );
}

#[tokio::test]
async fn a_forbidden_search_never_reaches_the_splunk_mcp_server() {
    let s = setup_via(
        Via::Mcp,
        vec![
            Turn::calls(&[
                ("splunk_search", json!({"spl": "index=opsmesh | delete"})),
                (
                    "splunk_search",
                    json!({"spl": "index=opsmesh earliest=-30d sourcetype=\"opsmesh:models\""}),
                ),
                (
                    "splunk_search",
                    json!({"spl": "index=opsmesh sourcetype=\"opsmesh:models\"", "earliest": "-90d"}),
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
    assert_eq!(s.mcp.requests(), 0, "the MCP server was never contacted");
    assert!(s.splunk.searches().is_empty());
    let refusals: Vec<&str> = report
        .steps
        .iter()
        .filter_map(|s| s.refused.as_deref())
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(refusals[0].contains("`delete`"), "{}", refusals[0]);
    assert!(refusals[1].contains("`earliest=`"), "{}", refusals[1]);
    assert!(
        refusals[2].contains("further than the allowed"),
        "{}",
        refusals[2]
    );
}

#[tokio::test]
async fn a_cost_question_reads_opencost_and_the_argocd_application() {
    let s = setup(
        vec![
            Turn::calls(&[
                (
                    "opencost_allocation",
                    json!({"namespace": "ml-team-a", "window": "1h", "aggregate": "controller"}),
                ),
                ("opencost_allocation", json!({"namespace": "ml-team-a", "window": "30d"})),
                (
                    "kubernetes_get",
                    json!({"kind": "application", "namespace": "argocd", "name": "ml-team-a-models"}),
                ),
            ]),
            Turn::answer(
                json!({"summary": "gpt-oss-120b is the namespace's cost", "root_cause": "unknown",
                       "risk": "low", "findings": [
                           {"claim": "gpt-oss-120b carries the namespace's cost", "evidence_ids": ["t1"]},
                           {"claim": "its application is managed by Argo CD", "evidence_ids": ["t2"]}]})
                .to_string(),
            ),
        ],
        |_| {},
    )
    .await;
    let report = s.investigator.investigate(&subject()).await;

    assert_eq!(report.state, InvestigationState::Completed, "{report:#?}");
    assert_eq!(report.findings.len(), 2);
    let cost = &report.evidence[0];
    assert_eq!(cost.tool, "opencost_allocation");
    assert!(cost.result.contains("totalCost"), "{}", cost.result);
    assert!(cost.result.contains("gpt-oss-120b"), "{}", cost.result);
    let refused = report.steps[2].refused.as_deref().unwrap_or_default();
    assert!(refused.contains("window \"30d\""), "{refused}");
    let application = &report.evidence[1];
    assert_eq!(application.tool, "kubernetes_get");
    assert!(
        application.result.contains("\"sync\""),
        "{}",
        application.result
    );
    assert!(
        application.result.contains("\"health\""),
        "{}",
        application.result
    );
}
