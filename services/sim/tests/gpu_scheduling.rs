//! The simulator's scheduler, through the real clients: with the cluster's GPUs all taken, new
//! predictor pods stay Pending, unschedulable, with kube-scheduler's `FailedScheduling` event;
//! GPUs freed by another model are bound to them.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use opsmesh_sim::SimConfig;
use serde_json::json;

const SCENARIO: &str = r#"
name: gpus
state:
  inference_services:
    - {namespace: ml-team-a, name: llm, replicas: 1, gpu: 1, memory_limit: 16Gi}
    - {namespace: ml-team-a, name: embedder, replicas: 2, gpu: 1, memory_limit: 4Gi}
faults:
  - {at: 1m, kind: gpu_shortage, target: inferenceservice/ml-team-a/llm, params: {nodes: 3, gpus_per_node: 1, replicas: 3}}
expect: {}
"#;

const INSUFFICIENT: &str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";

async fn phases(client: &kube::Client, isvc: &str) -> Vec<String> {
    let mut out: Vec<String> = Api::<Pod>::namespaced(client.clone(), "ml-team-a")
        .list(&ListParams::default().labels(&format!("serving.kserve.io/inferenceservice={isvc}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.status.and_then(|s| s.phase).unwrap_or_default())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn pods_without_a_free_gpu_stay_pending_until_another_model_gives_one_up() {
    let r = common::start(SCENARIO, SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(180));
    assert_eq!(
        phases(&r.client, "llm").await,
        ["Pending", "Pending", "Running"]
    );
    let pods = Api::<Pod>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().labels("serving.kserve.io/inferenceservice=llm"))
        .await
        .unwrap()
        .items;
    let pending = pods
        .iter()
        .find(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Pending"))
        .unwrap();
    let scheduled = &pending
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (
            scheduled.type_.as_str(),
            scheduled.status.as_str(),
            scheduled.reason.as_deref(),
            scheduled.message.as_deref()
        ),
        (
            "PodScheduled",
            "False",
            Some("Unschedulable"),
            Some(INSUFFICIENT)
        )
    );
    let events = Api::<Event>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().fields("reason=FailedScheduling"))
        .await
        .unwrap()
        .items;
    let ev = events
        .iter()
        .find(|e| e.involved_object.name == pending.metadata.name)
        .unwrap();
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.message.as_deref(), Some(INSUFFICIENT));
    assert_eq!(ev.reporting_component.as_deref(), Some("default-scheduler"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));

    // embedder gives up one replica: its GPU goes to one waiting llm pod.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    );
    Api::<DynamicObject>::namespaced_with(r.client.clone(), "ml-team-a", &ar)
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"predictor": {"minReplicas": 1}}})),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(60));
    assert_eq!(phases(&r.client, "embedder").await, ["Running"]);
    assert_eq!(
        phases(&r.client, "llm").await,
        ["Pending", "Running", "Running"]
    );
}
