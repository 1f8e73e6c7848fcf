//! The failure kinds of issue 23, seen through the real clients: what the kubelet and KServe
//! report, and what makes each go away.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::{
    Api,
    api::{ListParams, PostParams},
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
