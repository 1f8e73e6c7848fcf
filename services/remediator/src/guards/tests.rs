use std::collections::BTreeMap;

use opsmesh_proto::{
    RootCause, Target,
    diagnosis::{ActionProposal, Diagnosis, Evidence, EvidenceSource},
    quantity::parse_bytes,
    remediation::{ActionMode, ActionRecord},
};
use opsmesh_runbooks::ActionSpec;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::config::PolicyConfig;

use super::{plan::known_checks, *};

fn policy() -> PolicyConfig {
    PolicyConfig {
        memory_ceiling: "16Gi".into(),
        replica_floor: 2,
        max_replica_reduction: 0.75,
        ..PolicyConfig::default()
    }
}

fn params(v: Value) -> BTreeMap<String, Value> {
    match v {
        Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

fn record(kind: ActionKind, target: &str, p: Value) -> ActionRecord {
    ActionRecord {
        kind,
        target: target.into(),
        params: params(p),
        idempotency_key: format!("i:{kind}:{target}"),
        mode: ActionMode::Auto,
        approved_by: None,
    }
}

const ISVC: &str = "inferenceservice/ml/llama";

fn execute(kind: ActionKind, p: Value) -> Result<(), GuardViolation> {
    let target = if kind == ActionKind::ApplyResourceQuota {
        "namespace/ml"
    } else {
        ISVC
    };
    check_execute(&record(kind, target, p), &policy())
}

fn code(r: Result<(), GuardViolation>) -> &'static str {
    r.map_or_else(|v| v.code(), |()| "ok")
}

#[test]
fn codes_are_unique_and_round_trip() {
    for g in Guard::ALL {
        assert_eq!(Guard::from_code(g.code()), Some(g));
        assert_eq!(
            Guard::ALL.iter().filter(|o| o.code() == g.code()).count(),
            1
        );
    }
    assert_eq!(Guard::from_code("memory_lowered"), None);
    assert_eq!(
        Guard::of(ActionKind::PatchMemoryLimit).collect::<Vec<_>>(),
        [Guard::MemoryNotLowered, Guard::MemoryCeiling]
    );
}

#[test]
fn memory_is_raised_below_the_ceiling_before_executing() {
    let patch = ActionKind::PatchMemoryLimit;
    assert_eq!(
        code(execute(
            patch,
            json!({"memory_limit": "640Mi", "observed_memory_limit": "256Mi"})
        )),
        "ok"
    );
    let lowered = execute(
        patch,
        json!({"memory_limit": "1Gi", "observed_memory_limit": "32Gi"}),
    )
    .unwrap_err();
    assert_eq!(lowered.code(), "memory_not_lowered");
    assert_eq!(
        lowered.to_string(),
        "new limit 1Gi is below the current 32Gi"
    );
    let equal = execute(
        patch,
        json!({"memory_limit": "1Gi", "observed_memory_limit": "1024Mi"}),
    )
    .unwrap_err();
    assert_eq!(
        equal.to_string(),
        "new limit 1Gi is equal to the current 1024Mi"
    );
    let high = execute(
        patch,
        json!({"memory_limit": "32Gi", "observed_memory_limit": "8Gi"}),
    )
    .unwrap_err();
    assert_eq!(high.code(), "memory_ceiling");
    assert_eq!(
        high.to_string(),
        "new limit 32Gi is above the policy ceiling 16Gi"
    );
    let unlimited = execute(patch, json!({"memory_limit": "1Gi"})).unwrap_err();
    assert_eq!(unlimited.code(), "memory_not_lowered", "{unlimited}");
    assert!(
        unlimited.to_string().contains("sets no memory limit now"),
        "{unlimited}"
    );
    assert_eq!(
        code(execute(
            patch,
            json!({"memory_limit": "1Gi", "observed_memory_limit": "a lot"})
        )),
        "memory_not_lowered",
        "a garbled observation fails closed"
    );
}

#[test]
fn scaling_keeps_the_floor_and_the_blast_radius_before_executing() {
    let scale = ActionKind::ScaleInferenceService;
    assert_eq!(
        code(execute(
            scale,
            json!({"replicas": 2, "observed_replicas": 8})
        )),
        "ok",
        "exactly the allowed 75%"
    );
    assert_eq!(
        code(execute(
            scale,
            json!({"replicas": 1, "observed_replicas": 1})
        )),
        "replica_floor"
    );
    let wide = execute(scale, json!({"replicas": 2, "observed_replicas": 10})).unwrap_err();
    assert_eq!(wide.code(), "blast_radius");
    assert_eq!(
        wide.to_string(),
        "scaling 10 → 2 takes away 80% of the replicas; the policy allows 75%"
    );
    assert_eq!(
        code(execute(
            scale,
            json!({"replicas": 4, "observed_replicas": 2})
        )),
        "ok",
        "scaling up takes nothing away"
    );
    assert_eq!(
        code(execute(scale, json!({"replicas": 2}))),
        "blast_radius",
        "unobserved"
    );
}

#[test]
fn the_quota_covers_the_pods_running_now() {
    let quota = ActionKind::ApplyResourceQuota;
    assert_eq!(
        code(execute(quota, json!({"pods": 4, "observed_pods": 3}))),
        "ok"
    );
    assert_eq!(
        code(execute(quota, json!({"pods": 4, "observed_pods": 4}))),
        "ok"
    );
    let below = execute(quota, json!({"pods": 4, "observed_pods": 9})).unwrap_err();
    assert_eq!(below.code(), "quota_covers_usage");
    assert_eq!(
        below.to_string(),
        "a quota of 4 pods is below the 9 pods the namespace runs now"
    );
    assert_eq!(
        code(execute(quota, json!({"pods": 4}))),
        "quota_covers_usage"
    );
}

#[test]
fn a_rollback_goes_to_the_known_good_image_and_changes_it() {
    let rollback = ActionKind::RollbackImage;
    let good = json!({"image": "img:1", "observed_image": "img:2", "observed_last_known_good_image": "img:1"});
    assert_eq!(code(execute(rollback, good)), "ok");
    let same = execute(
            rollback,
            json!({"image": "img:1", "observed_image": "img:1", "observed_last_known_good_image": "img:1"}),
        )
        .unwrap_err();
    assert_eq!(same.code(), "image_changes");
    let other = execute(
            rollback,
            json!({"image": "img:0", "observed_image": "img:2", "observed_last_known_good_image": "img:1"}),
        )
        .unwrap_err();
    assert_eq!(other.code(), "image_known_good");
    assert_eq!(
        other.to_string(),
        "img:0 is not the InferenceService's last known good image (img:1)"
    );
    assert_eq!(
        execute(
            rollback,
            json!({"image": "img:1", "observed_image": "img:2"})
        )
        .unwrap_err()
        .to_string(),
        "img:1 is not the InferenceService's last known good image (none recorded)"
    );
    assert_eq!(
        code(execute(rollback, json!({"image": "img:1"}))),
        "image_changes",
        "unobserved"
    );
}

#[test]
fn unparameterised_actions_have_no_guards() {
    for kind in [
        ActionKind::RestartInferenceService,
        ActionKind::ArgocdSync,
        ActionKind::SuggestPolicyFix,
        ActionKind::Escalate,
    ] {
        assert_eq!(code(execute(kind, json!({}))), "ok");
        assert_eq!(Guard::of(kind).count(), 0);
    }
}

// ---- plan stage ----

fn proposal(kind: ActionKind, target: &str, p: Value) -> ActionProposal {
    ActionProposal {
        kind,
        target: target.into(),
        params: params(p),
        evidence_ids: vec!["ev1".into(), "ev2".into()],
        rationale: String::new(),
    }
}

fn telemetry(id: &str, values: Value) -> Evidence {
    Evidence {
        id: id.into(),
        source: EvidenceSource::Telemetry,
        query: "opsmesh.telemetry.v1".into(),
        earliest: None,
        latest: None,
        row_count: 1,
        values: params(values),
        error: None,
    }
}

fn diagnosis(actions: Vec<ActionProposal>, evidence: Vec<Evidence>) -> Diagnosis {
    Diagnosis {
        alert_ids: Vec::new(),
        fingerprint: "fp".into(),
        root_cause: RootCause::OomKilled,
        confidence: 0.9,
        target: None,
        summary: String::new(),
        evidence,
        runbook: None,
        recommended_actions: actions,
        explanation: String::new(),
        narrative: None,
        developer_fix: None,
        llm: Default::default(),
    }
}

fn spec(kind: ActionKind, checks: &[&str]) -> ActionSpec {
    ActionSpec {
        kind,
        target: "inferenceservice".into(),
        params: BTreeMap::new(),
        guards: vec!["in words".into()],
        checks: checks.iter().map(|c| c.to_string()).collect(),
    }
}

/// The plan stage for the first proposal of `d`.
fn plan(d: &Diagnosis, checks: &[&str]) -> Result<Vec<(Guard, Checked)>, GuardViolation> {
    let p = &d.recommended_actions[0];
    let target = p.target.parse::<Target>().unwrap();
    check_plan(p, &target, &spec(p.kind, checks), d, &policy())
}

fn model(id: &str, name: &str, extra: Value) -> Evidence {
    let mut values = json!({"namespace": "ml", "name": name});
    values
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    telemetry(id, values)
}

#[test]
fn the_plan_refuses_a_memory_limit_the_diagnosis_knows_is_lower() {
    let patch = |p: Value| proposal(ActionKind::PatchMemoryLimit, ISVC, p);
    let by_param = diagnosis(
        vec![patch(
            json!({"memory_limit": "1Gi", "previous_memory_limit": "32Gi"}),
        )],
        Vec::new(),
    );
    let v = plan(&by_param, &[]).unwrap_err();
    assert_eq!(
        (v.code(), v.to_string().as_str()),
        (
            "memory_not_lowered",
            "new limit 1Gi is below the current 32Gi"
        )
    );
    // The diagnosis forgot the rollback param, but its evidence saw the limit.
    let by_evidence = diagnosis(
        vec![patch(
            json!({"memory_limit": "1Gi", "previous_memory_limit": null}),
        )],
        vec![model("ev2", "llama", json!({"memory_limit": "32Gi"}))],
    );
    assert_eq!(
        plan(&by_evidence, &[]).unwrap_err().code(),
        "memory_not_lowered"
    );
    // Evidence about another model says nothing about this one.
    let unknown = diagnosis(
        vec![patch(json!({"memory_limit": "1Gi"}))],
        vec![model("ev2", "other", json!({"memory_limit": "32Gi"}))],
    );
    assert_eq!(
        plan(&unknown, &[]).unwrap(),
        [
            (Guard::MemoryNotLowered, Checked::Deferred),
            (Guard::MemoryCeiling, Checked::Passed)
        ]
    );
    let raised = diagnosis(
        vec![patch(
            json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
        )],
        vec![model("ev2", "llama", json!({"memory_limit": "256Mi"}))],
    );
    assert_eq!(
        plan(&raised, &["memory_not_lowered", "memory_ceiling"]).unwrap(),
        [
            (Guard::MemoryNotLowered, Checked::Passed),
            (Guard::MemoryCeiling, Checked::Passed)
        ]
    );
    let high = diagnosis(vec![patch(json!({"memory_limit": "17Gi"}))], Vec::new());
    assert_eq!(plan(&high, &[]).unwrap_err().code(), "memory_ceiling");
}

#[test]
fn the_plan_checks_scaling_against_the_replicas_the_evidence_saw() {
    let scale = |p: Value| proposal(ActionKind::ScaleInferenceService, ISVC, p);
    let floor = diagnosis(vec![scale(json!({"replicas": 1}))], Vec::new());
    assert_eq!(plan(&floor, &[]).unwrap_err().code(), "replica_floor");
    let wide = diagnosis(
        vec![scale(json!({"replicas": 2, "previous_replicas": 8}))],
        vec![model("ev2", "llama", json!({"replicas": 10}))],
    );
    assert_eq!(plan(&wide, &[]).unwrap_err().code(), "blast_radius");
    let fine = diagnosis(
        vec![scale(json!({"replicas": 2, "previous_replicas": 8}))],
        vec![model("ev2", "llama", json!({"replicas": 8}))],
    );
    assert_eq!(
        plan(&fine, &[]).unwrap(),
        [
            (Guard::ReplicaFloor, Checked::Passed),
            (Guard::BlastRadius, Checked::Passed)
        ]
    );
}

#[test]
fn the_plan_sizes_usage_after_its_own_scale_down() {
    let quota = |pods: u32| {
        proposal(
            ActionKind::ApplyResourceQuota,
            "namespace/ml",
            json!({"pods": pods}),
        )
    };
    let scale = proposal(
        ActionKind::ScaleInferenceService,
        "inferenceservice/ml/big",
        json!({"replicas": 2, "previous_replicas": 8}),
    );
    let evidence = || {
        vec![
            model("ev1", "big", json!({"replicas": 8})),
            model("ev2", "small", json!({"replicas": 1})),
        ]
    };
    let with_scale = |pods| diagnosis(vec![quota(pods), scale.clone()], evidence());
    assert_eq!(
        plan(&with_scale(4), &[]).unwrap(),
        [(Guard::QuotaCoversUsage, Checked::Passed)],
        "2 + 1 after the scale-down"
    );
    assert_eq!(
        plan(&with_scale(3), &[]).unwrap(),
        [(Guard::QuotaCoversUsage, Checked::Passed)]
    );
    let low = plan(&with_scale(2), &[]).unwrap_err();
    assert_eq!(low.code(), "quota_covers_usage");
    assert!(low.to_string().contains("below the 3 pods"), "{low}");
    let without_scale = diagnosis(vec![quota(4)], evidence());
    assert!(
        plan(&without_scale, &[])
            .unwrap_err()
            .to_string()
            .contains("below the 9 pods"),
    );
    let no_evidence = diagnosis(vec![quota(4)], Vec::new());
    assert_eq!(
        plan(&no_evidence, &[]).unwrap(),
        [(Guard::QuotaCoversUsage, Checked::Deferred)]
    );
}

#[test]
fn the_plan_rolls_back_only_to_a_different_known_good_image() {
    let rollback = |p: Value| proposal(ActionKind::RollbackImage, ISVC, p);
    let same = diagnosis(
        vec![rollback(
            json!({"image": "img:1", "failing_image": "img:1"}),
        )],
        Vec::new(),
    );
    assert_eq!(plan(&same, &[]).unwrap_err().code(), "image_changes");
    let not_good = diagnosis(
        vec![rollback(
            json!({"image": "img:0", "failing_image": "img:2"}),
        )],
        vec![model(
            "ev2",
            "llama",
            json!({"image": "img:2", "last_known_good_image": "img:1"}),
        )],
    );
    assert_eq!(plan(&not_good, &[]).unwrap_err().code(), "image_known_good");
    let good = diagnosis(
        vec![rollback(
            json!({"image": "img:1", "failing_image": "img:2"}),
        )],
        vec![model(
            "ev2",
            "llama",
            json!({"image": "img:2", "last_known_good_image": "img:1"}),
        )],
    );
    assert_eq!(
        plan(&good, &["image_changes", "image_known_good"]).unwrap(),
        [
            (Guard::ImageChanges, Checked::Passed),
            (Guard::ImageKnownGood, Checked::Passed)
        ]
    );
}

#[test]
fn a_section_naming_an_unknown_or_foreign_check_is_refused() {
    let d = diagnosis(
        vec![proposal(
            ActionKind::PatchMemoryLimit,
            ISVC,
            json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
        )],
        Vec::new(),
    );
    let unknown = plan(&d, &["memory_not_lowered", "no_oom_in_an_hour"]).unwrap_err();
    assert_eq!(unknown.code(), "unknown_check");
    assert_eq!(
        unknown.to_string(),
        "the runbook section requires check \"no_oom_in_an_hour\" for patch_memory_limit, which the remediator does not implement for it (known: memory_not_lowered, memory_ceiling)"
    );
    let foreign = plan(&d, &["replica_floor"]).unwrap_err();
    assert_eq!(foreign.code(), "unknown_check", "{foreign}");
}

#[test]
fn the_repository_runbooks_declare_every_check_and_the_schema_knows_them() {
    let library = opsmesh_runbooks::Library::built_in().unwrap();
    for runbook in library.runbooks() {
        for action in runbook.front.sections.iter().flat_map(|s| &s.actions) {
            known_checks(action.kind, action).unwrap();
            let mut declared: Vec<&str> = action.checks.iter().map(String::as_str).collect();
            let mut all: Vec<&str> = Guard::of(action.kind).map(Guard::code).collect();
            declared.sort_unstable();
            all.sort_unstable();
            assert_eq!(declared, all, "{} {}", runbook.front.id, action.kind);
        }
    }
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks/schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema["$defs"]["check"]["enum"],
        json!(Guard::ALL.map(Guard::code))
    );
}

/// A memory quantity in one of the units operators write.
fn memory() -> impl Strategy<Value = String> {
    (
        1u64..200_000,
        prop::sample::select(vec!["", "Ki", "Mi", "Gi", "k", "M", "G"]),
    )
        .prop_map(|(n, unit)| format!("{n}{unit}"))
}

proptest! {
    #[test]
    fn the_memory_guard_never_lets_a_lower_or_equal_limit_through(
        new in memory(),
        current in memory(),
    ) {
        let generous = PolicyConfig { memory_ceiling: "1000000Ti".into(), ..policy() };
        let (n, c) = (parse_bytes(&new).unwrap(), parse_bytes(&current).unwrap());
        let executed = check_execute(
            &record(
                ActionKind::PatchMemoryLimit,
                ISVC,
                json!({"memory_limit": new, "observed_memory_limit": current}),
            ),
            &generous,
        );
        prop_assert_eq!(executed.is_ok(), n > c, "{} over {}: {:?}", new, current, executed);
        let d = diagnosis(
            vec![proposal(
                ActionKind::PatchMemoryLimit,
                ISVC,
                json!({"memory_limit": new, "previous_memory_limit": current}),
            )],
            Vec::new(),
        );
        let p = &d.recommended_actions[0];
        let planned = check_plan(
            p,
            &ISVC.parse::<Target>().unwrap(),
            &spec(p.kind, &[]),
            &d,
            &generous,
        );
        prop_assert_eq!(planned.is_ok(), n > c, "{} over {}: {:?}", new, current, planned);
    }
}
