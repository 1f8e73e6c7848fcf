use std::time::Duration;

use opsmesh_proto::{
    Severity,
    alert::{AlertSourceKind, AlertStatus, Entity},
    quantity::parse_bytes,
    telemetry::{
        CostAllocation, GitOpsStatus, ModelHealth, PolicyStatus, Telemetry, TelemetryRecord,
    },
};

use super::{model::round_up_mib, *};

#[test]
fn memory_rounds_up_to_the_step() {
    assert_eq!(round_up_mib(480 << 20, 64), "512Mi");
    assert_eq!(round_up_mib((480u64 << 20) * 13 / 10, 64), "640Mi");
    assert_eq!(round_up_mib(1 << 30, 64), "1Gi");
    assert_eq!(round_up_mib(1, 0), "1Mi");
}

#[test]
fn an_unusable_entity_is_escalated_naming_its_values_and_targets_nothing() {
    // Even next to usable-looking fields (the receiver clears them), unusable wins.
    let entity = Entity {
        unusable: vec![opsmesh_proto::alert::UnusableField {
            field: "namespace".into(),
            quoted: r#""prod; rm -rf""#.into(),
            truncated: false,
            reason: "not a DNS label".into(),
        }],
        ..isvc("a", "big")
    };
    let f = run(&alert(entity, &[("hourly_cost", "102.0")]), &store());
    assert_eq!(f.root_cause, RootCause::Unknown);
    assert_eq!(f.target, None);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::Escalate]);
    assert_eq!(f.actions[0].target, "unknown");
    assert!(
        f.summary.contains(r#"namespace="prod; rm -rf""#),
        "{}",
        f.summary
    );
    assert!(
        f.explanation.contains(r#"namespace="prod; rm -rf""#),
        "{}",
        f.explanation
    );
}

fn alert(entity: Entity, row: &[(&str, &str)]) -> Alert {
    Alert {
        source_kind: AlertSourceKind::SplunkAlertAction,
        source: "splunk".into(),
        name: "test".into(),
        status: AlertStatus::Firing,
        severity: Severity::High,
        fingerprint: "fp".into(),
        sid: Some("sid".into()),
        app: None,
        owner: None,
        results_link: None,
        rows: vec![
            row.iter()
                .map(|(k, v)| (k.to_string(), FieldValue::One(v.to_string())))
                .collect(),
        ],
        rows_truncated: false,
        labels: Default::default(),
        annotations: Default::default(),
        entity,
        starts_at: None,
        received_at: Utc::now(),
    }
}

fn isvc(ns: &str, name: &str) -> Entity {
    Entity {
        namespace: Some(ns.into()),
        kind: Some(EntityKind::Inferenceservice),
        name: Some(name.into()),
        ..Entity::default()
    }
}

fn store() -> TelemetryStore {
    TelemetryStore::new(Duration::from_secs(3600), 100)
}

fn observe(store: &TelemetryStore, resource: &str, record: TelemetryRecord) {
    store.record(Telemetry {
        resource: resource.into(),
        observed_at: Utc::now(),
        record,
    });
}

fn model(ns: &str, name: &str) -> ModelHealth {
    ModelHealth {
        namespace: ns.into(),
        name: name.into(),
        ready: true,
        replicas: 2,
        ready_replicas: 2,
        memory_limit: Some("256Mi".into()),
        ..ModelHealth::default()
    }
}

fn run(alert: &Alert, store: &TelemetryStore) -> Finding {
    let mut log = EvidenceLog::default();
    let ev = log.add(EvidenceSource::Alert, "alert".into(), 1, BTreeMap::new());
    diagnose(alert, &ev, store, &RuleSettings::default(), log, Utc::now())
}

#[test]
fn oom_recommends_headroom_over_the_peak() {
    let s = store();
    let mut m = model("a", "m");
    m.ready = false;
    m.oom_killed = 2;
    m.restarts = 7;
    m.peak_working_set_bytes = Some(480 << 20);
    observe(&s, "inferenceservice/a/m", TelemetryRecord::Models(m));
    let f = run(&alert(isvc("a", "m"), &[]), &s);
    assert_eq!(f.root_cause, RootCause::OomKilled);
    assert_eq!(f.actions[0].kind, ActionKind::PatchMemoryLimit);
    assert_eq!(f.actions[0].params["memory_limit"], "640Mi");
    assert_eq!(f.actions[0].evidence_ids, ["ev1", "ev2"]);
    assert_eq!(f.evidence.len(), 2);
    assert!(f.explanation.contains("ev2"));
}

/// The OOM finding for a model limited at `limit` whose peak was `peak`.
fn oom_at(limit: Option<&str>, peak: Option<u64>) -> Finding {
    let s = store();
    let mut m = model("a", "m");
    m.oom_killed = 1;
    m.memory_limit = limit.map(str::to_owned);
    m.peak_working_set_bytes = peak;
    observe(&s, "inferenceservice/a/m", TelemetryRecord::Models(m));
    run(&alert(isvc("a", "m"), &[]), &s)
}

#[test]
fn oom_raises_from_the_limit_when_the_peak_was_sampled_below_it() {
    let f = oom_at(Some("1Gi"), Some(512 << 20));
    assert_eq!(
        f.actions[0].params["memory_limit"], "2Gi",
        "{}",
        f.explanation
    );
    assert!(f.explanation.contains("not above the current limit"));
}

/// Kubernetes reports a container killed at its limit with usage near the limit: that peak
/// says nothing of the demand above it, so the limit × factor is the basis, not peak × headroom.
#[test]
fn oom_with_usage_near_the_limit_raises_from_the_limit() {
    let f = oom_at(Some("256Mi"), Some(250 << 20));
    assert_eq!(
        f.actions[0].params["memory_limit"], "512Mi",
        "{}",
        f.explanation
    );
    // A peak above what the limit says (sampled under a higher limit) still counts.
    let f = oom_at(Some("256Mi"), Some(480 << 20));
    assert_eq!(f.actions[0].params["memory_limit"], "640Mi");
}

#[test]
fn oom_at_the_ceiling_escalates_instead_of_lowering_the_limit() {
    let f = oom_at(Some("32Gi"), None);
    assert_eq!(f.root_cause, RootCause::OomKilled);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::Escalate], "{}", f.summary);
    assert!(f.summary.contains("32Gi"), "{}", f.summary);
    let library = opsmesh_runbooks::Library::built_in().unwrap();
    let hit = library
        .retrieve(f.root_cause, "x", &f.query, Some(ActionKind::Escalate))
        .unwrap();
    assert_eq!(
        hit.section.heading,
        "Escalate: memory demand above the ceiling"
    );
}

#[test]
fn oom_never_proposes_a_limit_at_or_below_the_current_one() {
    let mib = |n: u64| n << 20;
    for limit in [64, 256, 1000, 1024, 4096, 12_000, 16_384, 20_000, 32_768] {
        for peak in [
            None,
            Some(1),
            Some(100),
            Some(limit / 2),
            Some(limit),
            Some(limit * 3),
        ] {
            let f = oom_at(Some(&format!("{limit}Mi")), peak.map(mib));
            for a in f
                .actions
                .iter()
                .filter(|a| a.kind == ActionKind::PatchMemoryLimit)
            {
                let new = a.params["memory_limit"]
                    .as_str()
                    .and_then(|q| parse_bytes(q).ok())
                    .unwrap();
                assert!(
                    new > mib(limit),
                    "{limit}Mi, peak {peak:?}Mi: proposed {}",
                    a.params["memory_limit"]
                );
            }
            assert!(!f.actions.is_empty(), "{limit}Mi, peak {peak:?}");
        }
    }
}

#[test]
fn without_telemetry_the_alert_row_limit_is_used() {
    let s = store();
    let row = [("reason", "OOMKilled"), ("memory_limit", "32Gi")];
    let f = run(&alert(isvc("a", "big"), &row), &s);
    assert_eq!(f.actions[0].kind, ActionKind::Escalate, "{}", f.summary);
    let f = run(&alert(isvc("a", "big"), &[("reason", "OOMKilled")]), &s);
    // Nothing known: 1Gi is proposed, and the remediator's check against the limit it
    // observes refuses it for a model limited higher.
    assert_eq!(f.actions[0].params["memory_limit"], "1Gi");
    assert_eq!(f.actions[0].params["previous_memory_limit"], Value::Null);
}

#[test]
fn image_pull_rolls_back_only_to_a_known_good_image() {
    let s = store();
    let mut m = model("a", "r");
    m.waiting_reason = Some("ImagePullBackOff".into());
    m.last_known_good_image = Some("img:2.0.3".into());
    observe(
        &s,
        "inferenceservice/a/r",
        TelemetryRecord::Models(m.clone()),
    );
    let f = run(&alert(isvc("a", "r"), &[]), &s);
    assert_eq!(f.root_cause, RootCause::ImagePullError);
    assert_eq!(f.actions[0].kind, ActionKind::RollbackImage);
    assert_eq!(f.actions[0].params["image"], "img:2.0.3");
    m.last_known_good_image = None;
    let s = store();
    observe(&s, "inferenceservice/a/r", TelemetryRecord::Models(m));
    let f = run(&alert(isvc("a", "r"), &[]), &s);
    assert_eq!(
        f.actions[0].kind,
        ActionKind::Escalate,
        "never restart for a pull error"
    );
}

#[test]
fn crash_loop_restarts_and_healthy_is_none() {
    let s = store();
    let mut m = model("a", "c");
    m.waiting_reason = Some("CrashLoopBackOff".into());
    observe(&s, "inferenceservice/a/c", TelemetryRecord::Models(m));
    assert_eq!(
        run(&alert(isvc("a", "c"), &[]), &s).actions[0].kind,
        ActionKind::RestartInferenceService
    );
    let s = store();
    observe(
        &s,
        "inferenceservice/a/h",
        TelemetryRecord::Models(model("a", "h")),
    );
    let f = run(&alert(isvc("a", "h"), &[]), &s);
    assert_eq!(f.root_cause, RootCause::None);
    assert!(f.actions.is_empty());
}

#[test]
fn policy_violation_hands_the_developer_the_yaml() {
    let s = store();
    observe(
        &s,
        "policyreport/b/disallow-root-containers",
        TelemetryRecord::Policies(PolicyStatus {
            namespace: "b".into(),
            policy: "disallow-root-containers".into(),
            resource: "Pod/llama-0".into(),
            result: "fail".into(),
            message: "runAsNonRoot must be true".into(),
            denials: 3,
            ..PolicyStatus::default()
        }),
    );
    let entity = Entity {
        namespace: Some("b".into()),
        kind: Some(EntityKind::Namespace),
        policy: Some("disallow-root-containers".into()),
        ..Entity::default()
    };
    let f = run(&alert(entity, &[("resource", "llama-3-8b")]), &s);
    assert_eq!(f.root_cause, RootCause::PolicyViolation);
    assert_eq!(f.actions[0].target, "inferenceservice/b/llama-3-8b");
    assert!(f.developer_fix.unwrap().contains("runAsNonRoot: true"));
}

#[test]
fn gitops_drift_syncs() {
    let s = store();
    observe(
        &s,
        "application/c/app",
        TelemetryRecord::Argocd(GitOpsStatus {
            application: "app".into(),
            namespace: "c".into(),
            sync: "OutOfSync".into(),
            health: "Healthy".into(),
            revision: Some("abc".into()),
        }),
    );
    let entity = Entity {
        namespace: Some("c".into()),
        kind: Some(EntityKind::Application),
        name: Some("app".into()),
        application: Some("app".into()),
        ..Entity::default()
    };
    let f = run(&alert(entity, &[]), &s);
    assert_eq!(f.root_cause, RootCause::GitopsDrift);
    assert_eq!(f.actions[0].kind, ActionKind::ArgocdSync);
}

/// Namespace `a`: `big` scaled out from 2 to 8 replicas of $12.50/h, and `small`; the
/// namespace total (with its budget) when OpenCost telemetry has one.
fn spiked_namespace(total: Option<CostAllocation>) -> TelemetryStore {
    let s = store();
    let mut before = model("a", "big");
    before.replicas = 2;
    observe(
        &s,
        "inferenceservice/a/big",
        TelemetryRecord::Models(before.clone()),
    );
    let mut after = before.clone();
    after.replicas = 8;
    observe(&s, "inferenceservice/a/big", TelemetryRecord::Models(after));
    observe(
        &s,
        "inferenceservice/a/small",
        TelemetryRecord::Models(ModelHealth {
            replicas: 1,
            ..model("a", "small")
        }),
    );
    if let Some(total) = total {
        observe(&s, "cost/a", TelemetryRecord::Costs(total));
    }
    for i in 0..8 {
        observe(
            &s,
            &format!("cost/a/big-predictor-{i}"),
            TelemetryRecord::Costs(CostAllocation {
                namespace: "a".into(),
                pod: Some(format!("big-predictor-{i}")),
                window: "1h".into(),
                hourly_cost_usd: 12.5,
                ..CostAllocation::default()
            }),
        );
    }
    s
}

fn namespace_a() -> Entity {
    Entity {
        namespace: Some("a".into()),
        kind: Some(EntityKind::Namespace),
        ..Entity::default()
    }
}

fn total(budget: Option<f64>) -> CostAllocation {
    CostAllocation {
        namespace: "a".into(),
        window: "1h".into(),
        hourly_cost_usd: 102.0,
        hourly_budget_usd: budget,
        ..CostAllocation::default()
    }
}

#[test]
fn cost_overrun_scales_the_spiking_workload_then_caps_the_namespace() {
    let s = spiked_namespace(Some(total(Some(40.0))));
    let f = run(&alert(namespace_a(), &[]), &s);
    assert_eq!(f.root_cause, RootCause::CostOverrun);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            ActionKind::ScaleInferenceService,
            ActionKind::ApplyResourceQuota
        ]
    );
    assert_eq!(f.actions[0].target, "inferenceservice/a/big");
    assert_eq!(f.actions[0].params["replicas"], 2);
    assert_eq!(f.actions[1].target, "namespace/a");
    assert_eq!(
        f.actions[1].params["pods"], 4,
        "2 + 1 after the scale-down, plus one to surge"
    );
    assert!(f.summary.contains("155% over"), "{}", f.summary);
    assert!(f.explanation.contains("Δ = k·r·t"), "{}", f.explanation);
}

/// The size to scale back to is the workload's usual one from OpenCost's history, even when
/// the telemetry window saw only the spike.
#[test]
fn cost_baseline_comes_from_opencost_history() {
    let s = store();
    let mut spiked = model("a", "big");
    spiked.replicas = 8;
    observe(
        &s,
        "inferenceservice/a/big",
        TelemetryRecord::Models(spiked),
    );
    for i in 0..8 {
        observe(
            &s,
            &format!("cost/a/big-predictor-{i}"),
            TelemetryRecord::Costs(CostAllocation {
                namespace: "a".into(),
                pod: Some(format!("big-predictor-{i}")),
                window: "1h".into(),
                hourly_cost_usd: 12.5,
                ..CostAllocation::default()
            }),
        );
    }
    let scale_to = |history: &[(&str, u32)]| {
        let mut t = total(Some(40.0));
        t.baseline_replicas = history.iter().map(|(c, r)| (c.to_string(), *r)).collect();
        observe(&s, "cost/a", TelemetryRecord::Costs(t));
        let f = run(&alert(namespace_a(), &[]), &s);
        f.actions
            .iter()
            .find(|a| a.kind == ActionKind::ScaleInferenceService)
            .map(|a| (a.params["replicas"].clone(), f.explanation.clone()))
    };
    let (replicas, explanation) = scale_to(&[("big-predictor", 3)]).expect("a scale-down");
    assert_eq!(replicas, 3);
    assert!(explanation.contains("usually 3"), "{explanation}");
    assert_eq!(
        scale_to(&[]),
        None,
        "no history and a window that saw only 8 replicas: nothing to scale back to"
    );
    assert_eq!(
        scale_to(&[("other-predictor", 1)]),
        None,
        "another workload's history"
    );
}

#[test]
fn cost_figures_from_alert_fields_only_advise() {
    let row = [("hourly_cost", "102.0"), ("budget", "40")];
    // No namespace total in telemetry, or one without a budget: the overrun rests on
    // what the alert's sender wrote.
    for s in [spiked_namespace(None), spiked_namespace(Some(total(None)))] {
        let f = run(&alert(namespace_a(), &row), &s);
        assert_eq!(f.root_cause, RootCause::CostOverrun);
        let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [ActionKind::Escalate], "{}", f.explanation);
        assert!(
            f.explanation.contains("not from OpenCost telemetry"),
            "{}",
            f.explanation
        );
    }
}

fn missing_secret(keys: &[&str]) -> opsmesh_proto::telemetry::MissingReference {
    opsmesh_proto::telemetry::MissingReference {
        kind: opsmesh_proto::telemetry::ReferenceKind::Secret,
        name: "hf-token".into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        used_by: vec!["env HF_TOKEN of container kserve-container".into()],
        message: "secret \"hf-token\" not found".into(),
    }
}

#[test]
fn a_missing_secret_is_escalated_naming_the_object_its_keys_and_the_fix() {
    let s = store();
    let mut m = model("ml", "llm");
    m.ready = false;
    m.ready_replicas = 0;
    m.waiting_reason = Some("CreateContainerConfigError".into());
    m.missing_reference = Some(missing_secret(&["token"]));
    observe(&s, "inferenceservice/ml/llm", TelemetryRecord::Models(m));
    let f = run(&alert(isvc("ml", "llm"), &[]), &s);
    assert_eq!(f.root_cause, RootCause::MissingReference);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::Escalate]);
    let params = &f.actions[0].params;
    assert_eq!(params["missing_object"], "Secret ml/hf-token");
    assert_eq!(
        params["fix"],
        "kubectl create secret generic hf-token -n ml --from-literal=token=<value>"
    );
    assert_eq!(f.actions[0].evidence_ids, ["ev1", "ev2"]);
    let fix = f.developer_fix.expect("the YAML fix");
    assert!(fix.contains("kind: Secret\n"), "{fix}");
    assert!(fix.contains("  name: hf-token\n  namespace: ml\n"), "{fix}");
    assert!(fix.contains("stringData:\n  token: <value>\n"), "{fix}");
    assert!(f.summary.contains("Secret ml/hf-token"), "{}", f.summary);
}

#[test]
fn a_missing_config_map_read_whole_gets_a_placeholder_key() {
    let s = store();
    let mut m = model("ml", "llm");
    m.ready = false;
    m.missing_reference = Some(opsmesh_proto::telemetry::MissingReference {
        kind: opsmesh_proto::telemetry::ReferenceKind::ConfigMap,
        used_by: vec!["envFrom of container kserve-container".into()],
        message: "configmap \"model-cfg\" not found".into(),
        ..missing_secret(&[])
    });
    observe(&s, "inferenceservice/ml/llm", TelemetryRecord::Models(m));
    let f = run(&alert(isvc("ml", "llm"), &[]), &s);
    assert_eq!(f.root_cause, RootCause::MissingReference);
    assert_eq!(
        f.actions[0].params["fix"],
        "kubectl create configmap hf-token -n ml --from-literal=<key>=<value>"
    );
    let fix = f.developer_fix.expect("the YAML fix");
    assert!(fix.contains("kind: ConfigMap\n"), "{fix}");
    assert!(!fix.contains("type: Opaque"), "{fix}");
    assert!(fix.contains("data:\n  <key>: <value>\n"), "{fix}");
}

#[test]
fn alert_rows_that_claim_a_failure_do_not_outweigh_healthy_telemetry() {
    let s = store();
    observe(
        &s,
        "inferenceservice/a/m",
        TelemetryRecord::Models(model("a", "m")),
    );
    for reason in [
        "OOMKilled",
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "CreateContainerConfigError",
    ] {
        let row = [
            ("reason", reason),
            ("restarts", "9"),
            ("error_rate", "0.41"),
            ("ready", "false"),
            ("memory_limit", "256Mi"),
        ];
        let f = run(&alert(isvc("a", "m"), &row), &s);
        assert_eq!(f.root_cause, RootCause::None, "{reason}: {}", f.summary);
        assert!(f.actions.is_empty(), "{reason}: {:?}", f.actions);
    }
}

fn failing_to_load(previous: Option<&str>) -> Finding {
    let s = store();
    let mut m = model("ml", "llm");
    m.ready = false;
    m.ready_replicas = 0;
    m.storage_uri = Some("gs://m/v3-typo".into());
    m.previous_storage_uri = previous.map(str::to_owned);
    m.load_failure = Some(
        "storage-initializer exited with code 1: RuntimeError: Failed to fetch model. No model found in gs://m/v3-typo."
            .into(),
    );
    observe(&s, "inferenceservice/ml/llm", TelemetryRecord::Models(m));
    run(
        &alert(isvc("ml", "llm"), &[("reason", "CrashLoopBackOff")]),
        &s,
    )
}

#[test]
fn a_model_that_cannot_load_rolls_back_to_the_previous_storage_uri() {
    let f = failing_to_load(Some("gs://m/v2"));
    assert_eq!(f.root_cause, RootCause::ModelLoadFailure);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::RollbackStorageUri], "not a restart");
    assert_eq!(f.actions[0].params["storage_uri"], "gs://m/v2");
    assert_eq!(f.actions[0].params["failing_storage_uri"], "gs://m/v3-typo");
    assert_eq!(f.actions[0].evidence_ids, ["ev1", "ev2"]);
    assert!(
        f.explanation.contains("No model found"),
        "{}",
        f.explanation
    );
}

#[test]
fn a_model_that_cannot_load_without_a_previous_uri_is_escalated() {
    let f = failing_to_load(None);
    assert_eq!(f.root_cause, RootCause::ModelLoadFailure);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::Escalate]);
}

fn canary_split(rows: &[(&str, &str)]) -> Finding {
    let s = store();
    let mut m = model("ml", "llm");
    m.canary_traffic_percent = Some(20);
    m.traffic = vec![
        opsmesh_proto::telemetry::RevisionTraffic {
            revision: "llm-predictor-new".into(),
            percent: 20,
            latest: true,
        },
        opsmesh_proto::telemetry::RevisionTraffic {
            revision: "llm-predictor-old".into(),
            percent: 80,
            latest: false,
        },
    ];
    observe(&s, "inferenceservice/ml/llm", TelemetryRecord::Models(m));
    run(&alert(isvc("ml", "llm"), rows), &s)
}

#[test]
fn a_canary_erring_more_than_the_stable_revision_gets_no_traffic() {
    let f = canary_split(&[("canary_error_rate", "0.12"), ("stable_error_rate", "0.01")]);
    assert_eq!(f.root_cause, RootCause::CanaryRegression);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::SetCanaryTraffic]);
    let params = &f.actions[0].params;
    assert_eq!(params["traffic_percent"], 0);
    assert_eq!(params["previous_traffic_percent"], 20);
    assert_eq!(params["canary_revision"], "llm-predictor-new");
    assert_eq!(f.actions[0].evidence_ids, ["ev1", "ev2"]);
}

#[test]
fn a_canary_as_good_as_the_stable_revision_or_without_rates_is_left_alone() {
    for rows in [
        &[
            ("canary_error_rate", "0.012"),
            ("stable_error_rate", "0.01"),
        ][..],
        &[
            ("canary_error_rate", "0.004"),
            ("stable_error_rate", "0.001"),
        ][..],
        &[("error_rate", "0.3")][..],
    ] {
        let f = canary_split(rows);
        assert_eq!(f.root_cause, RootCause::None, "{rows:?}: {}", f.summary);
        assert!(f.actions.is_empty());
    }
}

/// An InferenceService running 4 replicas at maxReplicas `max`, with alert rows (oldest
/// first) carrying `p95_latency_ms`.
fn saturated(max: u32, headroom: Option<u32>, latencies: &[&str]) -> Finding {
    let s = store();
    let mut m = model("ml", "llm");
    (m.replicas, m.ready_replicas) = (1, 4);
    m.max_replicas = Some(max);
    m.pod_quota_headroom = headroom;
    observe(&s, "inferenceservice/ml/llm", TelemetryRecord::Models(m));
    let mut a = alert(isvc("ml", "llm"), &[]);
    a.rows = latencies
        .iter()
        .map(|l| [("p95_latency_ms".to_string(), FieldValue::One(l.to_string()))].into())
        .collect();
    run(&a, &s)
}

#[test]
fn an_autoscaler_at_its_bound_with_rising_latency_gets_a_higher_bound_within_the_quota() {
    let f = saturated(4, None, &["180", "240", "420"]);
    assert_eq!(
        f.root_cause,
        RootCause::AutoscalerSaturated,
        "{}",
        f.summary
    );
    assert_eq!(f.actions[0].kind, ActionKind::RaiseMaxReplicas);
    assert_eq!(f.actions[0].params["max_replicas"], 8);
    assert_eq!(f.actions[0].params["previous_max_replicas"], 4);
    let f = saturated(4, Some(3), &["180", "420"]);
    assert_eq!(f.actions[0].params["max_replicas"], 7);
    assert_eq!(f.actions[0].params["pod_quota_headroom"], 3);
}

#[test]
fn an_autoscaler_without_room_to_grow_is_advice_and_steady_latency_is_left_alone() {
    let f = saturated(4, Some(0), &["180", "420"]);
    assert_eq!(f.root_cause, RootCause::AutoscalerSaturated);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::AdviseCapacity]);
    assert!(f.developer_fix.unwrap().contains("ResourceQuota"));
    for rows in [&["200", "210"][..], &["420"][..]] {
        let f = saturated(4, None, rows);
        assert_eq!(f.root_cause, RootCause::None, "{rows:?}: {}", f.summary);
    }
    // Below its bound the autoscaler still has room: not this rule's case.
    let f = saturated(8, None, &["180", "420"]);
    assert_eq!(f.root_cause, RootCause::None, "{}", f.summary);
}

#[test]
fn pods_pending_for_gpus_get_advice_naming_the_namespace_gpu_use_and_candidates() {
    let s = store();
    let gpu_model = |name: &str, replicas: u32, ready: u32| {
        let mut m = model("ml", name);
        (m.replicas, m.ready_replicas, m.gpus_per_replica) = (replicas, ready, Some(1));
        m
    };
    let mut llm = gpu_model("llm", 3, 1);
    llm.ready = false;
    llm.unschedulable = Some(
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.".into(),
    );
    for m in [llm, gpu_model("embedder", 2, 2), gpu_model("ranker", 1, 1)] {
        let resource = format!("inferenceservice/ml/{}", m.name);
        observe(&s, &resource, TelemetryRecord::Models(m));
    }
    let f = run(&alert(isvc("ml", "llm"), &[]), &s);
    assert_eq!(f.root_cause, RootCause::GpuUnschedulable, "{}", f.summary);
    let kinds: Vec<ActionKind> = f.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActionKind::AdviseCapacity]);
    let params = &f.actions[0].params;
    assert_eq!(params["pending_replicas"], 2);
    assert_eq!(params["namespace_gpus_in_use"], 4);
    assert_eq!(params["scale_down_candidates"], json!(["embedder"]));
    let fix = f.developer_fix.unwrap();
    assert!(
        fix.contains("embedder (2 → 1 replicas frees 1 GPUs)"),
        "{fix}"
    );
    assert!(fix.contains("ranker 1 GPUs"), "{fix}");
}
