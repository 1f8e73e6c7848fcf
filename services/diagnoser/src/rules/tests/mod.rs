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

mod failure_kinds;
