//! metrics-server's PodMetrics (`metrics.k8s.io/v1beta1`) through kube-rs, as `kubectl top`
//! reads them: a container the kernel kills at its limit shows usage near that limit while it
//! runs and no sample while it waits in back-off; with room it shows what it needs.

mod common;

use std::time::Duration;

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use opsmesh_proto::quantity::parse_bytes;
use opsmesh_sim::SimConfig;
use serde_json::json;

const OOM: &str = r#"
name: oom
state:
  namespaces: [{name: ml-team-a}]
  inference_services:
    - {namespace: ml-team-a, name: gpt, replicas: 1, memory_limit: 256Mi}
    - {namespace: ml-team-a, name: embedder, replicas: 1, memory_limit: 1Gi}
faults:
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/gpt, params: {memory_demand: 480Mi}}
expect: {}
"#;

/// The working set of each sampled predictor container of `isvc`, in bytes.
async fn usage(client: &Client, isvc: &str) -> Vec<u64> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
        "pods",
    );
    Api::<DynamicObject>::namespaced_with(client.clone(), "ml-team-a", &ar)
        .list(&ListParams::default().labels(&format!("serving.kserve.io/inferenceservice={isvc}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|m| {
            let c = &m.data["containers"][0];
            assert_eq!(c["name"], "kserve-container");
            parse_bytes(c["usage"]["memory"].as_str().unwrap()).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_container_killed_at_its_limit_shows_usage_near_it() {
    let r = common::start(OOM, SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(5));
    let running = usage(&r.client, "gpt").await;
    assert_eq!(running.len(), 1);
    assert!(
        running[0] <= 256 << 20 && running[0] > 250 << 20,
        "near the 256Mi limit, never the 480Mi demand: {running:?}"
    );
    assert_eq!(usage(&r.client, "embedder").await, [512 << 20]);

    // Killed at 20 s, back-off 10 s: no sample while it waits.
    r.sim.advance(Duration::from_secs(20));
    assert!(usage(&r.client, "gpt").await.is_empty());

    // With room for its demand it shows what it needs.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    );
    Api::<DynamicObject>::namespaced_with(r.client.clone(), "ml-team-a", &ar)
        .patch(
            "gpt",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "replace", "path": "/spec/predictor/containers/0/resources/limits/memory", "value": "640Mi"}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(30));
    assert_eq!(usage(&r.client, "gpt").await, [480 << 20]);
}
