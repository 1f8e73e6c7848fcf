use std::{collections::BTreeMap, path::Path};

use opsmesh_proto::diagnosis::Evidence;
use opsmesh_runbooks::Runbook;
use serde_json::json;

use super::*;

const ISVC: &str = "inferenceservice/ml/llama";

fn values(v: Value) -> BTreeMap<String, Value> {
    v.as_object().unwrap().clone().into_iter().collect()
}

fn evidence(id: &str, source: EvidenceSource, v: Value) -> Evidence {
    Evidence {
        id: id.into(),
        source,
        query: "test".into(),
        earliest: None,
        latest: None,
        row_count: 1,
        values: values(v),
        error: None,
    }
}

/// A diagnosis of `root_cause` citing section `heading` of runbook `id` in `library`,
/// proposing `actions` (kind, target, params), each citing every piece of `evidence`.
fn cited(
    library: &Library,
    (id, heading): (&str, &str),
    root_cause: RootCause,
    actions: Vec<(ActionKind, &str, Value)>,
    evidence: Vec<Evidence>,
) -> Diagnosis {
    let runbook = library
        .runbooks()
        .iter()
        .find(|r| r.front.id == id)
        .expect("the runbook");
    let section = runbook
        .sections
        .iter()
        .find(|s| s.heading == heading)
        .expect("the section");
    let ids: Vec<String> = evidence.iter().map(|e| e.id.clone()).collect();
    Diagnosis {
        alert_ids: Vec::new(),
        fingerprint: "fp".into(),
        root_cause,
        confidence: 0.9,
        target: actions.first().map(|a| a.1.to_owned()),
        summary: root_cause.to_string(),
        evidence,
        runbook: Some(runbook.reference(section)),
        recommended_actions: actions
            .into_iter()
            .map(|(kind, target, params)| ActionProposal {
                kind,
                target: target.into(),
                params: values(params),
                evidence_ids: ids.clone(),
                rationale: "test".into(),
            })
            .collect(),
        explanation: String::new(),
        narrative: None,
        developer_fix: None,
        llm: Default::default(),
    }
}

/// An OOM diagnosis citing the repository's "Raise the memory limit" section of `library`.
fn oom(library: &Library, params: Value, values: Value) -> Diagnosis {
    cited(
        library,
        ("oom-killed", "Raise the memory limit"),
        RootCause::OomKilled,
        vec![(ActionKind::PatchMemoryLimit, ISVC, params)],
        vec![evidence("ev1", EvidenceSource::Telemetry, values)],
    )
}

fn run(library: &Library, d: &Diagnosis) -> Plan {
    plan(
        "inc",
        d,
        library,
        &PolicyConfig::default(),
        &History::default(),
        Utc::now(),
    )
}

/// The planned actions of `p`, which must be a plan to act (`what` says why it should be).
fn planned(p: Plan, what: &str) -> Vec<PlannedAction> {
    match p {
        Plan::Act { actions, .. } => actions,
        other => panic!("{what}: expected a plan to act, got {other:?}"),
    }
}

fn refusal(p: Plan) -> (&'static str, String) {
    match p {
        Plan::Refused(r) => (r.code, r.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_escalation_about_no_nameable_resource_needs_no_runbook() {
    let library = Library::built_in().unwrap();
    let mut d = cited(
        &library,
        ("oom-killed", "Raise the memory limit"),
        RootCause::Unknown,
        vec![(ActionKind::Escalate, "unknown", json!({}))],
        Vec::new(),
    );
    d.runbook = None;
    d.summary = "KServe errors: the alert names no usable resource (model=\"../x\")".into();
    match run(&library, &d) {
        Plan::Escalate(reason) => assert!(reason.contains("model=\"../x\""), "{reason}"),
        other => panic!("expected an escalation, got {other:?}"),
    }
    // A resource that parses still goes through the runbook checks.
    d.recommended_actions[0].target = ISVC.into();
    assert_eq!(refusal(run(&library, &d)).0, "no_runbook");
}

#[test]
fn a_lower_memory_limit_is_refused_naming_the_guard() {
    let library = Library::built_in().unwrap();
    // What the diagnoser proposed without telemetry (1Gi), for a model the evidence shows
    // limited at 32Gi.
    let d = oom(
        &library,
        json!({"memory_limit": "1Gi", "previous_memory_limit": null}),
        json!({"namespace": "ml", "name": "llama", "memory_limit": "32Gi"}),
    );
    assert_eq!(
        refusal(run(&library, &d)),
        (
            "memory_not_lowered",
            "new limit 1Gi is below the current 32Gi".to_owned()
        )
    );
}

#[test]
fn planned_actions_record_their_guards() {
    let library = Library::built_in().unwrap();
    let known = oom(
        &library,
        json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
        json!({"namespace": "ml", "name": "llama", "memory_limit": "256Mi"}),
    );
    let actions = planned(run(&library, &known), "planned");
    assert!(
        actions[0]
            .reason
            .contains("guards memory_not_lowered passed, memory_ceiling passed"),
        "{}",
        actions[0].reason
    );
    let unknown = oom(
        &library,
        json!({"memory_limit": "1Gi"}),
        json!({"namespace": "ml", "name": "llama"}),
    );
    let actions = planned(
        run(&library, &unknown),
        "planned: only the cluster can tell",
    );
    assert!(
        actions[0]
            .reason
            .contains("memory_not_lowered checked before executing"),
        "{}",
        actions[0].reason
    );
}

#[test]
fn a_proposal_cannot_pass_off_values_as_observed() {
    let library = Library::built_in().unwrap();
    let d = oom(
        &library,
        json!({"memory_limit": "1Gi", "observed_memory_limit": "256Mi"}),
        json!({"namespace": "ml", "name": "llama"}),
    );
    assert_eq!(refusal(run(&library, &d)).0, "invalid_params");
}

#[test]
fn a_section_with_a_ladder_puts_its_actions_on_step_one_and_no_proposal_may_claim_a_rung() {
    let library = Library::built_in().unwrap();
    let d = oom(
        &library,
        json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
        json!({"namespace": "ml", "name": "llama", "memory_limit": "256Mi"}),
    );
    let actions = planned(run(&library, &d), "planned");
    let rung = ladder::Rung::of(&actions[0].record).expect("on the ladder");
    assert_eq!(
        (
            rung.runbook.as_str(),
            rung.section.as_str(),
            rung.step,
            rung.max_steps
        ),
        ("oom-killed", "Raise the memory limit", 1, 4)
    );
    assert_eq!(
        actions[0].record.idempotency_key,
        format!("inc:patch_memory_limit:{ISVC}")
    );
    let claimed = oom(
        &library,
        json!({"memory_limit": "640Mi", "ladder": rung.to_param()}),
        json!({"namespace": "ml", "name": "llama"}),
    );
    assert_eq!(
        refusal(run(&library, &claimed)),
        (
            "invalid_params",
            "param ladder is recorded by the remediator from the runbook, not proposed".into()
        )
    );
    // A section without a ladder plans as before: no rung.
    let image = cited(
        &library,
        ("image-pull-error", "Roll back to the last known good image"),
        RootCause::ImagePullError,
        vec![(ActionKind::RollbackImage, ISVC, json!({"image": "r/m:1"}))],
        vec![evidence(
            "ev1",
            EvidenceSource::Telemetry,
            json!({"namespace": "ml", "name": "llama"}),
        )],
    );
    let actions = planned(run(&library, &image), "planned");
    assert_eq!(ladder::Rung::of(&actions[0].record), None);
}

#[test]
fn a_runbook_naming_a_check_the_remediator_lacks_is_refused() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks/oom-killed.md"),
    )
    .unwrap();
    let declared = "checks: [memory_not_lowered, memory_ceiling]";
    assert!(text.contains(declared), "the runbook declares its checks");
    let text = text.replacen(
        declared,
        "checks: [memory_not_lowered, memory_ceiling, no_new_oom_within_an_hour]",
        1,
    );
    let library = Library::from_runbooks(vec![
        Runbook::parse(Path::new("runbooks/oom-killed.md"), &text).unwrap(),
    ]);
    let d = oom(
        &library,
        json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
        json!({"namespace": "ml", "name": "llama"}),
    );
    let (code, reason) = refusal(run(&library, &d));
    assert_eq!(code, "unknown_check");
    assert!(reason.contains("no_new_oom_within_an_hour"), "{reason}");
}

/// The seed cost incident: `big` back from 8 to 2 replicas, then a pod quota, on the
/// figures in `evidence`.
fn cost_overrun(library: &Library, evidence: Vec<Evidence>) -> Diagnosis {
    cited(
        library,
        ("cost-overrun", "Scale down and cap the namespace"),
        RootCause::CostOverrun,
        vec![
            (
                ActionKind::ScaleInferenceService,
                "inferenceservice/ml/big",
                json!({"replicas": 2, "previous_replicas": 8}),
            ),
            (
                ActionKind::ApplyResourceQuota,
                "namespace/ml",
                json!({"pods": 4, "projected_saving_usd": 100.0}),
            ),
        ],
        evidence,
    )
}

#[test]
fn scaling_and_capping_need_cost_figures_from_telemetry() {
    let library = Library::built_in().unwrap();
    let alert_row = || {
        evidence(
            "ev1",
            EvidenceSource::Alert,
            json!({"namespace": "ml", "hourly_cost": "102", "budget": "40", "hourly_cost_usd": 102.0, "hourly_budget_usd": 40.0}),
        )
    };
    let (code, reason) = refusal(run(&library, &cost_overrun(&library, vec![alert_row()])));
    assert_eq!(code, "cost_not_from_telemetry");
    assert!(
        reason.contains("cost figures from alert fields may only advise"),
        "{reason}"
    );
    let total = |cost: f64| {
        evidence(
            "ev2",
            EvidenceSource::Telemetry,
            json!({"namespace": "ml", "window": "1h", "hourly_cost_usd": cost, "hourly_budget_usd": 40.0}),
        )
    };
    let (code, reason) = refusal(run(
        &library,
        &cost_overrun(&library, vec![alert_row(), total(30.0)]),
    ));
    assert_eq!(code, "cost_not_from_telemetry");
    assert!(reason.contains("within its budget"), "{reason}");
    let Plan::Act { actions, .. } = run(
        &library,
        &cost_overrun(&library, vec![alert_row(), total(102.0)]),
    ) else {
        panic!("planned on telemetry figures");
    };
    assert_eq!(actions.len(), 2);
}

#[test]
fn auto_without_an_allow_list_is_planned_for_approval_with_the_reason() {
    let library = Library::built_in().unwrap();
    let d = oom(
        &library,
        json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
        json!({"namespace": "ml", "name": "llama", "memory_limit": "256Mi"}),
    );
    let Plan::Act { mode, actions, .. } = run(&library, &d) else {
        panic!("planned");
    };
    assert_eq!(mode, ActionMode::Approve);
    assert!(
        actions[0].reason.contains("mode approve (patch_memory_limit is configured auto, but policy.allowed_namespaces is empty"),
        "{}",
        actions[0].reason
    );
    let listed = PolicyConfig {
        allowed_namespaces: vec!["ml".into()],
        ..PolicyConfig::default()
    };
    let Plan::Act { mode, .. } = plan(
        "inc",
        &d,
        &library,
        &listed,
        &History::default(),
        Utc::now(),
    ) else {
        panic!("planned");
    };
    assert_eq!(mode, ActionMode::Auto);
}
