//! The failure kinds of issue 23, seen through the real clients: what the kubelet and KServe
//! report, and what makes each go away.

mod common;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{Event, Pod, Secret},
};
use kube::{
    Api,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
};
use opsmesh_sim::SimConfig;
use serde_json::json;

fn scenario(fault: &str) -> String {
    format!(
        r#"
name: kinds
state:
  inference_services:
    - namespace: ml-team-a
      name: llama-guard
      replicas: 2
      memory_limit: 2Gi
faults:
{fault}
expect: {{}}
"#
    )
}

async fn predictor_pods(client: &kube::Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "ml-team-a")
        .list(&ListParams::default().labels("serving.kserve.io/inferenceservice=llama-guard"))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_missing_secret_keeps_the_container_from_being_created_until_it_exists() {
    let r = common::start(
        &scenario(
            "  - {at: 1m, kind: missing_reference, target: inferenceservice/ml-team-a/llama-guard, params: {secret: hf-token, key: token, env: HF_TOKEN}}",
        ),
        SimConfig::default(),
    )
    .await;
    r.sim.advance(Duration::from_secs(180));
    let before = predictor_pods(&r.client).await;
    assert_eq!(before.len(), 2);
    for p in &before {
        let env = &p.spec.as_ref().unwrap().containers[0].env.as_ref().unwrap()[0];
        let reference = env
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (
                env.name.as_str(),
                reference.name.as_str(),
                reference.key.as_str()
            ),
            ("HF_TOKEN", "hf-token", "token")
        );
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(
            waiting.reason.as_deref(),
            Some("CreateContainerConfigError")
        );
        assert_eq!(
            waiting.message.as_deref(),
            Some("secret \"hf-token\" not found")
        );
        assert_eq!(cs.restart_count, 0);
    }
    let events = Api::<Event>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().fields("type=Warning,reason=Failed"))
        .await
        .unwrap();
    assert_eq!(events.items.len(), 2);
    assert_eq!(
        events.items[0].message.as_deref(),
        Some("Error: secret \"hf-token\" not found")
    );

    // The Secret without the key: the kubelet names the key.
    let secrets = Api::<Secret>::namespaced(r.client.clone(), "ml-team-a");
    let secret = |data: serde_json::Value| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "hf-token"}, "stringData": data}))
            .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret(json!({"other": "x"})))
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(10));
    let cs = &predictor_pods(&r.client).await[0]
        .status
        .clone()
        .unwrap()
        .container_statuses
        .unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .message
            .as_deref(),
        Some("couldn't find key token in Secret ml-team-a/hf-token")
    );

    // With the key the same pods start: nothing had to be restarted.
    secrets
        .delete("hf-token", &Default::default())
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret(json!({"token": "t"})))
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(10));
    let after = predictor_pods(&r.client).await;
    assert_eq!(names(&after), names(&before));
    assert!(
        after
            .iter()
            .all(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Running"))
    );
}

fn names(pods: &[Pod]) -> Vec<Option<String>> {
    pods.iter().map(|p| p.metadata.name.clone()).collect()
}

#[tokio::test]
async fn a_storage_uri_without_a_model_never_gets_ready_until_it_is_rolled_back() {
    let yaml = scenario(
        "  - {at: 1m, kind: model_load_failure, target: inferenceservice/ml-team-a/llama-guard, params: {storage_uri: gs://models/llama-guard/v3-typo}}",
    )
    .replace("      memory_limit: 2Gi\n", "      memory_limit: 2Gi\n      storage_uri: gs://models/llama-guard/v2\n");
    let r = common::start(&yaml, SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(300));
    let isvc = isvcs(&r.client).get("llama-guard").await.unwrap();
    assert_eq!(
        isvc.data["spec"]["predictor"]["containers"][0]["env"][0]["value"],
        "gs://models/llama-guard/v3-typo"
    );
    assert_eq!(
        isvc.data["status"]["modelStatus"]["lastFailureInfo"]["reason"],
        "ModelLoadFailed"
    );
    let ready = &isvc.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["status"];
    assert_eq!(*ready, "False");
    let pods = predictor_pods(&r.client).await;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let init = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, "storage-initializer");
        assert_eq!(
            init.args.as_ref().unwrap()[0],
            "gs://models/llama-guard/v3-typo"
        );
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let init = &status.init_container_statuses.as_ref().unwrap()[0];
        assert!(init.restart_count >= 3, "{init:?}");
        assert_eq!(
            init.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let terminated = init
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(terminated.exit_code, 1);
        assert!(
            terminated
                .message
                .as_deref()
                .unwrap()
                .contains("No model found in gs://models/llama-guard/v3-typo")
        );
        let main = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            main.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("PodInitializing")
        );
    }
    // The previous revision still names the URI that held the model.
    let sets: Vec<serde_json::Value> = Api::<ReplicaSet>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|rs| serde_json::to_value(rs).unwrap())
        .collect();
    assert_eq!(
        opsmesh_proto::storage::previous_storage_uri(
            &sets,
            "llama-guard-predictor",
            "gs://models/llama-guard/v3-typo"
        )
        .as_deref(),
        Some("gs://models/llama-guard/v2")
    );

    // Back to the URI that holds the model: ready.
    let patch = json!([{"op": "replace", "path": "/spec/predictor/containers/0/env/0/value", "value": "gs://models/llama-guard/v2"}]);
    isvcs(&r.client)
        .patch(
            "llama-guard",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(patch).unwrap()),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(30));
    let isvc = isvcs(&r.client).get("llama-guard").await.unwrap();
    let ready = &isvc.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["status"];
    assert_eq!(*ready, "True");
}

fn isvcs(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    );
    Api::namespaced_with(client.clone(), "ml-team-a", &ar)
}

#[tokio::test]
async fn a_canary_takes_its_share_of_the_traffic_and_zero_sends_all_back_to_stable() {
    let r = common::start(
        &scenario(
            "  - {at: 1m, kind: canary_regression, target: inferenceservice/ml-team-a/llama-guard, params: {image: registry.example.com/kserve/llama-guard:2.0.0, traffic_percent: 20}}",
        ),
        SimConfig::default(),
    )
    .await;
    r.sim.advance(Duration::from_secs(30));
    let stable = isvcs(&r.client).get("llama-guard").await.unwrap().data["status"]["components"]
        ["predictor"]["latestRolledoutRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    r.sim.advance(Duration::from_secs(120));
    let isvc = isvcs(&r.client).get("llama-guard").await.unwrap();
    let predictor = &isvc.data["status"]["components"]["predictor"];
    let canary = predictor["latestCreatedRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(canary, stable);
    assert_eq!(
        predictor["traffic"],
        json!([
            {"tag": "latest", "revisionName": canary, "percent": 20, "latestRevision": true},
            {"tag": "prev", "revisionName": stable, "percent": 80, "latestRevision": false},
        ])
    );

    // The percentage routes traffic only: no new revision.
    isvcs(&r.client)
        .patch(
            "llama-guard",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"predictor": {"canaryTrafficPercent": 0}}})),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(10));
    let isvc = isvcs(&r.client).get("llama-guard").await.unwrap();
    let predictor = &isvc.data["status"]["components"]["predictor"];
    assert_eq!(predictor["latestCreatedRevision"], canary.as_str());
    assert_eq!(predictor["traffic"][0]["percent"], 0);
    assert_eq!(predictor["traffic"][1]["revisionName"], stable.as_str());
    assert_eq!(predictor["traffic"][1]["percent"], 100);

    // Without the field the latest revision is rolled out.
    isvcs(&r.client)
        .patch(
            "llama-guard",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"predictor": {"canaryTrafficPercent": null}}})),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(10));
    let isvc = isvcs(&r.client).get("llama-guard").await.unwrap();
    let predictor = &isvc.data["status"]["components"]["predictor"];
    assert_eq!(predictor["latestRolledoutRevision"], canary.as_str());
    assert_eq!(predictor["previousRolledoutRevision"], stable.as_str());
}
