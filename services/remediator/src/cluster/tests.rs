use super::{inference_service::ISVC_LABEL, *};

#[test]
fn memory_patch_targets_the_model_server_container() {
    let isvc = json!({"spec": {"predictor": {"containers": [
        {"name": "sidecar", "image": "s"},
        {"name": "kserve-container", "image": "m", "resources": {"limits": {"memory": "256Mi"}}},
    ]}}});
    let ops = memory_patch(&isvc, "640Mi").unwrap();
    assert_eq!(ops[0]["path"], "/spec/predictor/containers/1/name");
    assert_eq!(
        ops[1]["path"],
        "/spec/predictor/containers/1/resources/limits/memory"
    );
    assert_eq!(ops[1]["value"], "640Mi");
    let bare = json!({"spec": {"predictor": {"containers": [{"name": "kserve-container"}]}}});
    assert_eq!(
        memory_patch(&bare, "1Gi").unwrap()[1]["value"],
        json!({"limits": {"memory": "1Gi"}})
    );
}

fn pod(isvc: Option<&str>, phase: &str, deleting: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "p",
            "labels": isvc.map(|i| json!({ISVC_LABEL: i})).unwrap_or(json!({})),
            "deletionTimestamp": deleting.then_some("2025-01-01T00:00:00Z"),
        },
        "status": {"phase": phase},
    }))
    .unwrap()
}

#[test]
fn settled_pods_count_what_stays_after_a_scale_down() {
    let mut pods = vec![
        pod(None, "Running", false),
        pod(None, "Succeeded", false),
        pod(None, "Failed", false),
        pod(Some("small"), "Pending", false),
        pod(Some("big"), "Running", true),
    ];
    pods.extend((0..8).map(|_| pod(Some("big"), "Running", false)));
    let none = BTreeMap::new();
    assert_eq!(
        settled_pods(&pods, &none),
        1 + 1 + 8,
        "finished and deleting left out"
    );
    let capped = BTreeMap::from([("big".to_owned(), 2), ("small".to_owned(), 5)]);
    assert_eq!(
        settled_pods(&pods, &capped),
        1 + 1 + 2,
        "big was scaled to at most 2: its other pods are going"
    );
}

#[test]
fn scale_patch_is_absolute_and_caps_max() {
    let isvc = json!({"spec": {"predictor": {"minReplicas": 8, "maxReplicas": 10}}});
    assert_eq!(
        scale_patch(&isvc, 2, None),
        json!({"spec": {"predictor": {"minReplicas": 2, "maxReplicas": 2}}})
    );
    assert_eq!(
        scale_patch(&isvc, 8, Some(10)),
        json!({"spec": {"predictor": {"minReplicas": 8, "maxReplicas": 10}}})
    );
}

#[test]
fn an_application_deploys_to_its_destination_and_its_resources_namespaces() {
    let app = json!({
        "spec": {"destination": {"server": "https://kubernetes.default.svc", "namespace": "ml"}},
        "status": {"resources": [
            {"kind": "InferenceService", "namespace": "ml", "name": "a"},
            {"kind": "Role", "namespace": "payments", "name": "b"},
            {"kind": "ClusterRole", "name": "c"}
        ]}
    });
    assert_eq!(app_namespaces(&app), ["ml", "payments"]);
    assert!(app_namespaces(&json!({"spec": {}})).is_empty());
}
