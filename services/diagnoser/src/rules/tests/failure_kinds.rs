//! Rules for the failure kinds added with closed-loop remediation (#23): missing references,
//! model load failures, canaries, saturated autoscalers, GPU shortages, noisy alerts.

use super::*;

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
