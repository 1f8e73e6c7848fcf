//! KServe's autoscaler in the simulator, through the real clients: an InferenceService whose
//! load asks for more replicas than `maxReplicas` runs at the bound; raising the bound adds
//! pods up to the load, within the namespace's pod quota, without a new revision.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::{
    Api,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
};
use opsmesh_sim::SimConfig;
use serde_json::json;

const SCENARIO: &str = r#"
name: autoscaler
state:
  inference_services:
    - namespace: ml-team-a
      name: reranker
      replicas: 2
      memory_limit: 1Gi
faults:
  - {at: 1m, kind: autoscaler_saturated, target: inferenceservice/ml-team-a/reranker, params: {max_replicas: 4, demand: 7}}
expect: {}
"#;

async fn running_predictors(client: &kube::Client) -> Vec<String> {
    let mut names: Vec<String> = Api::<Pod>::namespaced(client.clone(), "ml-team-a")
        .list(&ListParams::default().labels("serving.kserve.io/inferenceservice=reranker"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

async fn set_max_replicas(client: &kube::Client, max: u32) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    );
    Api::<DynamicObject>::namespaced_with(client.clone(), "ml-team-a", &ar)
        .patch(
            "reranker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"predictor": {"maxReplicas": max}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_saturated_autoscaler_runs_at_its_bound_and_grows_into_a_raised_one_within_the_quota() {
    let r = common::start(SCENARIO, SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(180));
    let at_bound = running_predictors(&r.client).await;
    assert_eq!(at_bound.len(), 4, "{at_bound:?}");

    // A pod quota with room for one more pod: used is what the quota controller counts.
    let quotas = Api::<ResourceQuota>::namespaced(r.client.clone(), "ml-team-a");
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": "team-pods", "namespace": "ml-team-a"},
                "spec": {"hard": {"pods": "5"}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(10));
    let status = quotas.get("team-pods").await.unwrap().status.unwrap();
    assert_eq!(status.hard.unwrap()["pods"].0, "5");
    assert_eq!(status.used.unwrap()["pods"].0, "4");

    // The bound is not part of the pod template: the pods at the bound stay.
    set_max_replicas(&r.client, 8).await;
    r.sim.advance(Duration::from_secs(60));
    let raised = running_predictors(&r.client).await;
    assert_eq!(raised.len(), 5, "the quota admits one more: {raised:?}");
    assert!(at_bound.iter().all(|p| raised.contains(p)), "{raised:?}");

    quotas
        .delete("team-pods", &Default::default())
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(60));
    assert_eq!(
        running_predictors(&r.client).await.len(),
        7,
        "the load asks for 7"
    );
}
