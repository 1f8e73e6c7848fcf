//! The remediator's hands on what a real cluster offers, against the simulator through
//! kube-rs: a rollback goes back to the predictor Deployment's previous ReplicaSet revision
//! (and is refused without one, or for any other image), and a restart is `kubectl rollout
//! restart`'s `kubectl.kubernetes.io/restartedAt` stamp on the predictor pod template.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use opsmesh_proto::{
    ActionKind,
    remediation::{ActionMode, ActionRecord},
};
use opsmesh_remediator::cluster::{ActError, Cluster};
use opsmesh_sim::{Scenario, SimConfig, SimServer, Simulator, resources::INFERENCE_SERVICES};

const STATE: &str = "
name: revisions
state:
  namespaces: [{name: ml-team-a}]
  inference_services:
    - {namespace: ml-team-a, name: reranker, replicas: 2, image: registry.example.com/kserve/reranker:2.1.0, previous_image: registry.example.com/kserve/reranker:2.0.3}
    - {namespace: ml-team-a, name: fresh, replicas: 1, image: registry.example.com/kserve/fresh:1.0.0}
faults:
  - {at: 0s, kind: image_pull_error, target: inferenceservice/ml-team-a/reranker}
  - {at: 0s, kind: image_pull_error, target: inferenceservice/ml-team-a/fresh}
expect: {}
";

struct Rig {
    sim: Simulator,
    _server: SimServer,
    client: Client,
    cluster: Cluster,
}

async fn rig() -> Rig {
    let scenario = Scenario::parse(STATE, "revisions.yaml").unwrap();
    let sim = Simulator::from_scenario(&scenario, SimConfig::default());
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig_yaml("default")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let cluster = Cluster::new(
        Some(client.clone()),
        None,
        "opsmesh".into(),
        Duration::from_secs(5),
    )
    .unwrap();
    Rig {
        sim,
        _server: server,
        client,
        cluster,
    }
}

fn action(kind: ActionKind, model: &str, params: serde_json::Value) -> ActionRecord {
    ActionRecord {
        kind,
        target: format!("inferenceservice/ml-team-a/{model}"),
        params: serde_json::from_value::<BTreeMap<_, _>>(params).unwrap(),
        idempotency_key: format!("incident-1:{kind}:{model}"),
        mode: ActionMode::Auto,
        approved_by: None,
    }
}

#[tokio::test]
async fn rollback_goes_to_the_previous_replica_set_revision() {
    let r = rig().await;
    let good = "registry.example.com/kserve/reranker:2.0.3";
    let mut rollback = action(
        ActionKind::RollbackImage,
        "reranker",
        json!({"image": good}),
    );
    let observed = r.cluster.observe(&rollback).await.unwrap();
    assert_eq!(observed["observed_last_known_good_image"], good);
    assert_eq!(
        observed["observed_image"],
        "registry.example.com/kserve/reranker:2.1.0"
    );
    rollback.params.extend(observed);
    assert!(!r.cluster.is_done(&rollback, "incident-1").await.unwrap());

    // Any other image is refused, even one the cluster ran at some point.
    let other = action(
        ActionKind::RollbackImage,
        "reranker",
        json!({"image": "registry.example.com/kserve/reranker:1.0.0"}),
    );
    match r.cluster.execute(&other, "incident-1", true).await {
        Err(ActError::Refused(e)) => assert!(e.contains("previous revision"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    r.cluster
        .execute(&rollback, "incident-1", false)
        .await
        .unwrap();
    assert!(r.cluster.is_done(&rollback, "incident-1").await.unwrap());
    r.sim.advance(Duration::from_secs(30));
    let health = r.cluster.check(&rollback).await.unwrap();
    assert!(health.healthy, "{}", health.detail);
    // Now the failing image is the previous revision: a rollback of the rollback goes there.
    let again = r.cluster.observe(&rollback).await.unwrap();
    assert_eq!(
        again["observed_last_known_good_image"],
        "registry.example.com/kserve/reranker:2.1.0"
    );
}

#[tokio::test]
async fn without_an_earlier_revision_there_is_nothing_to_roll_back_to() {
    let r = rig().await;
    let rollback = action(
        ActionKind::RollbackImage,
        "fresh",
        json!({"image": "registry.example.com/kserve/fresh:0.9.0"}),
    );
    let observed = r.cluster.observe(&rollback).await.unwrap();
    assert!(
        !observed.contains_key("observed_last_known_good_image"),
        "{observed:?}"
    );
    match r.cluster.execute(&rollback, "incident-1", true).await {
        Err(ActError::Refused(e)) => {
            assert!(e.contains("no earlier ReplicaSet revision"), "{e}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The guard that runs before execution sees no known good image and stops it.
    let mut planned = rollback.clone();
    planned.params.extend(observed);
    assert!(
        opsmesh_remediator::guards::check_execute(&planned, &Default::default()).is_err(),
        "refused before any write"
    );
}

async fn pod_names(client: &Client, model: &str) -> Vec<String> {
    Api::<Pod>::namespaced(client.clone(), "ml-team-a")
        .list(&ListParams::default().labels(&format!("serving.kserve.io/inferenceservice={model}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect()
}

#[tokio::test]
async fn restart_stamps_the_pod_template_as_kubectl_rollout_restart_does() {
    let r = rig().await;
    let before = pod_names(&r.client, "reranker").await;
    let stamp = "2026-12-05T17:00:00Z";
    let restart = action(
        ActionKind::RestartInferenceService,
        "reranker",
        json!({"restarted_at": stamp}),
    );
    assert!(!r.cluster.is_done(&restart, "incident-1").await.unwrap());
    let detail = r
        .cluster
        .execute(&restart, "incident-1", false)
        .await
        .unwrap();
    assert!(
        detail.contains("kubectl.kubernetes.io/restartedAt"),
        "{detail}"
    );
    assert!(r.cluster.is_done(&restart, "incident-1").await.unwrap());
    r.sim.advance(Duration::from_secs(1));
    let after = pod_names(&r.client, "reranker").await;
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "new pods: {before:?} -> {after:?}"
    );
    let isvc = r
        .sim
        .with_world(|w| w.get(&INFERENCE_SERVICES, "ml-team-a", "reranker"))
        .unwrap();
    assert_eq!(
        isvc["spec"]["predictor"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        stamp
    );
    assert!(
        isvc["metadata"]["annotations"]
            .as_object()
            .is_none_or(|a| a.keys().all(|k| !k.starts_with("opsmesh.dev/"))),
        "no annotation of opsmesh's own: {}",
        isvc["metadata"]
    );

    // A second restart (another stamp) is not done yet; without a stamp it is refused.
    let later = action(
        ActionKind::RestartInferenceService,
        "reranker",
        json!({"restarted_at": "2026-12-05T17:05:00Z"}),
    );
    assert!(!r.cluster.is_done(&later, "incident-2").await.unwrap());
    let unstamped = action(ActionKind::RestartInferenceService, "reranker", json!({}));
    assert!(matches!(
        r.cluster.execute(&unstamped, "incident-3", true).await,
        Err(ActError::Refused(_))
    ));
}
