//! KServe raw-deployment mode through kube-rs: each predictor is a Deployment whose pod
//! template revisions are ReplicaSets (`deployment.kubernetes.io/revision`, owned by the
//! Deployment, older ones at zero replicas); a scenario's `previous_image` is the older
//! revision; a template change (`kubectl rollout restart`'s annotation included) makes a new
//! revision and new pods; going back to an old template revives its ReplicaSet.

mod common;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use opsmesh_sim::SimConfig;
use serde_json::json;

const SELECTOR: &str = "serving.kserve.io/inferenceservice=gpt-oss-120b";

fn isvcs(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    );
    Api::namespaced_with(client.clone(), "ml-team-a", &ar)
}

/// (revision, image, spec.replicas) of each ReplicaSet, oldest revision first.
async fn history(client: &Client) -> Vec<(u64, String, i32)> {
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), "ml-team-a")
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap();
    let mut out: Vec<(u64, String, i32)> = sets
        .items
        .iter()
        .map(|rs| {
            let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("Deployment", "gpt-oss-120b-predictor")
            );
            assert_eq!(owner.controller, Some(true));
            let spec = &rs.spec;
            let image = spec
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .clone()
                .unwrap();
            let revision =
                rs.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"]
                    .parse()
                    .unwrap();
            (revision, image, spec.replicas.unwrap())
        })
        .collect();
    out.sort();
    out
}

async fn pods(client: &Client) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "ml-team-a")
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap()
        .items
}

async fn set_image(client: &Client, image: &str) {
    isvcs(client)
        .patch(
            "gpt-oss-120b",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/predictor/containers/0/image", "value": image}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
}

/// `kubectl rollout restart`'s stamp on the predictor pod template.
async fn restart(client: &Client, stamp: &str) {
    let stamped = json!({"spec": {"predictor": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}});
    isvcs(client)
        .patch(
            "gpt-oss-120b",
            &PatchParams::default(),
            &Patch::Merge(stamped),
        )
        .await
        .unwrap();
}

const OLD: &str = "registry.example.com/kserve/gpt-oss:1.4.1";
const NEW: &str = "registry.example.com/kserve/gpt-oss:1.4.2";

#[tokio::test]
async fn previous_image_is_the_older_replica_set_revision() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    assert_eq!(
        history(&r.client).await,
        [(1, OLD.to_owned(), 0), (2, NEW.to_owned(), 2)]
    );
    let deployment = Api::<Deployment>::namespaced(r.client.clone(), "ml-team-a")
        .get("gpt-oss-120b-predictor")
        .await
        .unwrap();
    assert_eq!(
        deployment.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("InferenceService", "gpt-oss-120b")
    );
    assert_eq!(deployment.spec.replicas, Some(2));
    r.sim.advance(Duration::from_secs(30));
    let status = Api::<Deployment>::namespaced(r.client.clone(), "ml-team-a")
        .get_status("gpt-oss-120b-predictor")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.ready_replicas, Some(2));

    // The pods belong to the current ReplicaSet, by uid.
    let current = Api::<ReplicaSet>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|rs| rs.spec.replicas == Some(2))
        .unwrap();
    assert_eq!(current.status.as_ref().unwrap().ready_replicas, Some(2));
    for pod in pods(&r.client).await {
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "ReplicaSet");
        assert_eq!(Some(&owner.uid), current.metadata.uid.as_ref());
    }

    // A model without previous_image has a single revision.
    let embedder = Api::<ReplicaSet>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().labels("serving.kserve.io/inferenceservice=embedder"))
        .await
        .unwrap();
    assert_eq!(embedder.items.len(), 1);
}

#[tokio::test]
async fn a_template_change_is_a_new_revision_and_going_back_revives_the_old_one() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let first_pods: Vec<String> = pods(&r.client)
        .await
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    set_image(&r.client, "registry.example.com/kserve/gpt-oss:1.5.0").await;
    r.sim.advance(Duration::from_secs(1));
    assert_eq!(
        history(&r.client).await,
        [
            (1, OLD.to_owned(), 0),
            (2, NEW.to_owned(), 0),
            (3, "registry.example.com/kserve/gpt-oss:1.5.0".to_owned(), 2)
        ]
    );
    let second_pods = pods(&r.client).await;
    assert_eq!(second_pods.len(), 2);
    assert!(
        second_pods
            .iter()
            .all(|p| !first_pods.contains(p.metadata.name.as_ref().unwrap()))
    );

    // Back to the first image: its ReplicaSet becomes revision 4, as `rollout undo` does.
    set_image(&r.client, OLD).await;
    r.sim.advance(Duration::from_secs(1));
    assert_eq!(
        history(&r.client).await,
        [
            (2, NEW.to_owned(), 0),
            (3, "registry.example.com/kserve/gpt-oss:1.5.0".to_owned(), 0),
            (4, OLD.to_owned(), 2)
        ]
    );
    let revived = Api::<ReplicaSet>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|rs| rs.spec.replicas == Some(2))
        .unwrap();
    assert_eq!(
        revived.metadata.annotations.unwrap()["deployment.kubernetes.io/revision-history"],
        "1"
    );
}

#[tokio::test]
async fn rollout_restart_annotation_on_the_pod_template_replaces_the_pods() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let before: Vec<String> = pods(&r.client)
        .await
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    let stamp = "2026-01-01T00:00:00Z";
    restart(&r.client, stamp).await;
    r.sim.advance(Duration::from_secs(1));
    let after = pods(&r.client).await;
    assert_eq!(after.len(), 2);
    for pod in &after {
        assert!(
            !before.contains(pod.metadata.name.as_ref().unwrap()),
            "new pods"
        );
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()["kubectl.kubernetes.io/restartedAt"],
            stamp
        );
    }
    let revisions = history(&r.client).await;
    assert_eq!(
        revisions.last().unwrap().0,
        3,
        "a restart is a revision: {revisions:?}"
    );
    assert_eq!(revisions.last().unwrap().1, NEW, "with the same image");
    let deployment = Api::<Deployment>::namespaced(r.client.clone(), "ml-team-a")
        .get("gpt-oss-120b-predictor")
        .await
        .unwrap();
    let template = deployment.spec.template;
    assert_eq!(
        template.metadata.unwrap().annotations.unwrap()["kubectl.kubernetes.io/restartedAt"],
        stamp
    );

    // Writing the same stamp again changes nothing.
    restart(&r.client, stamp).await;
    r.sim.advance(Duration::from_secs(1));
    let again: Vec<String> = pods(&r.client)
        .await
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    let names: Vec<String> = after
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(again, names);
}
