//! kube-rs, the client the collector and remediator use, against the simulator: discovery,
//! get, list with selectors, create, replace with conflicts, merge / JSON / apply patches,
//! dry runs, delete, errors as Status objects and the RBAC allow-list.

mod common;

use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ResourceQuota};
use kube::{
    Api, Error,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
    discovery::Discovery,
};
use opsmesh_sim::{Rbac, RbacRule, SimConfig};
use serde_json::json;

fn isvc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    )
}

fn api_error(e: Error) -> (u16, String, String) {
    match e {
        Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_every_group() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let discovery = Discovery::new(r.client.clone())
        .run()
        .await
        .expect("discovery");
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_owned()).collect();
    for g in [
        "",
        "apps",
        "serving.kserve.io",
        "wgpolicyk8s.io",
        "kyverno.io",
        "argoproj.io",
    ] {
        assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
    }
    let version = r.client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn get_and_list_with_selectors() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let ns: Api<Namespace> = Api::all(r.client.clone());
    let team_a = ns.get("ml-team-a").await.unwrap();
    assert_eq!(
        team_a.metadata.annotations.unwrap()["opsmesh.dev/hourly-budget-usd"],
        "40"
    );
    assert_eq!(
        ns.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );

    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "ml-team-a");
    let all = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 3, "2 gpt-oss replicas + 1 embedder");
    let gpt = pods
        .list(&ListParams::default().labels("serving.kserve.io/inferenceservice=gpt-oss-120b"))
        .await
        .unwrap();
    assert_eq!(gpt.items.len(), 2);
    let not_gpt = pods
        .list(
            &ListParams::default()
                .labels("serving.kserve.io/inferenceservice notin (gpt-oss-120b)"),
        )
        .await
        .unwrap();
    assert_eq!(not_gpt.items.len(), 1);
    let everywhere: Api<Pod> = Api::all(r.client.clone());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );

    let isvcs: Api<DynamicObject> =
        Api::namespaced_with(r.client.clone(), "ml-team-a", &isvc_resource());
    let gpt = isvcs.get("gpt-oss-120b").await.unwrap();
    assert_eq!(
        gpt.data["spec"]["predictor"]["containers"][0]["resources"]["limits"]["memory"],
        "256Mi"
    );
    let (code, reason, message) = api_error(isvcs.get("nope").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(
        message,
        "inferenceservices.serving.kserve.io \"nope\" not found"
    );
    let events: Api<Event> = Api::namespaced(r.client.clone(), "ml-team-a");
    events
        .list(&ListParams::default().fields("type=Warning"))
        .await
        .expect("field selectors work");
}

#[tokio::test]
async fn merge_json_patch_and_dry_run() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let isvcs: Api<DynamicObject> =
        Api::namespaced_with(r.client.clone(), "ml-team-a", &isvc_resource());
    let before = isvcs.get("embedder").await.unwrap();
    let rv = before.metadata.resource_version.clone().unwrap();

    // Dry run: validated, answered, not stored.
    let dry = isvcs
        .patch(
            "embedder",
            &PatchParams {
                dry_run: true,
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"predictor": {"minReplicas": 3}}})),
        )
        .await
        .unwrap();
    assert_eq!(dry.data["spec"]["predictor"]["minReplicas"], 3);
    let still = isvcs.get("embedder").await.unwrap();
    assert_eq!(still.data["spec"]["predictor"]["minReplicas"], 1);
    assert_eq!(
        still.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );

    let patched = isvcs
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "test", "path": "/spec/predictor/containers/0/resources/limits/memory", "value": "512Mi"},
                {"op": "replace", "path": "/spec/predictor/containers/0/resources/limits/memory", "value": "1Gi"}
            ])).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"]["predictor"]["containers"][0]["resources"]["limits"]["memory"],
        "1Gi"
    );
    assert_eq!(patched.metadata.generation, Some(2));

    // A failing JSON patch test is refused and changes nothing.
    let err = isvcs
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/spec/predictor/minReplicas", "value": 7}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 422);

    // Strategic merge is not supported for custom resources, as on a real API server.
    let err = isvcs
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 415);

    // Validation errors name the field.
    let err = isvcs
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "x", "resources": {"limits": {"memory": "lots"}}}]}}})),
        )
        .await
        .unwrap_err();
    let (code, reason, message) = api_error(err);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("spec.predictor.containers[0].resources.limits.memory"),
        "{message}"
    );

    // Only the real patches are in the request log; the dry run is flagged.
    let log = r.sim.requests();
    assert_eq!(log.len(), 5);
    assert!(log[0].dry_run);
    assert_eq!(log[1].status, 200);
    assert_eq!(log[1].patch_type.as_deref(), Some("json"));
    assert_eq!(log.iter().filter(|l| l.status >= 400).count(), 3);
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_conflicts() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let isvcs: Api<DynamicObject> =
        Api::namespaced_with(r.client.clone(), "ml-team-a", &isvc_resource());
    let mut first = isvcs.get("embedder").await.unwrap();
    let mut second = first.clone();
    first.data["spec"]["predictor"]["minReplicas"] = json!(2);
    isvcs
        .replace("embedder", &PostParams::default(), &first)
        .await
        .unwrap();
    second.data["spec"]["predictor"]["minReplicas"] = json!(3);
    let (code, reason, message) = api_error(
        isvcs
            .replace("embedder", &PostParams::default(), &second)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );
    // The controller followed the accepted replace.
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "ml-team-a");
    let lp = ListParams::default().labels("serving.kserve.io/inferenceservice=embedder");
    assert_eq!(pods.list(&lp).await.unwrap().items.len(), 2);
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_conflicts() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(r.client.clone(), "ml-team-a");
    let quota = json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "opsmesh-budget"},
        "spec": {"hard": {"pods": "4", "requests.nvidia.com/gpu": "2"}},
    });
    // Apply creates...
    let created = quotas
        .patch(
            "opsmesh-budget",
            &PatchParams::apply("opsmesh-remediator"),
            &Patch::Apply(&quota),
        )
        .await
        .unwrap();
    let managed = created.metadata.managed_fields.unwrap();
    assert_eq!(managed[0].manager.as_deref(), Some("opsmesh-remediator"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    // ...is idempotent...
    quotas
        .patch(
            "opsmesh-budget",
            &PatchParams::apply("opsmesh-remediator"),
            &Patch::Apply(&quota),
        )
        .await
        .unwrap();
    // ...and conflicts when another manager changes an owned field without force.
    let mut other = quota.clone();
    other["spec"]["hard"]["pods"] = json!("10");
    let (code, reason, message) = api_error(
        quotas
            .patch(
                "opsmesh-budget",
                &PatchParams::apply("kubectl"),
                &Patch::Apply(&other),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("opsmesh-remediator") && message.contains(".spec.hard.pods"),
        "{message}"
    );
    let forced = quotas
        .patch(
            "opsmesh-budget",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().hard.unwrap()["pods"].0, "10");
    // A field the manager stops applying is removed.
    let fewer = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "opsmesh-budget"}, "spec": {"hard": {"pods": "10"}}});
    let after = quotas
        .patch(
            "opsmesh-budget",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&fewer),
        )
        .await
        .unwrap();
    let hard = after.spec.unwrap().hard.unwrap();
    assert!(
        hard.contains_key("requests.nvidia.com/gpu"),
        "still owned by opsmesh-remediator"
    );
    // Apply needs a field manager.
    let err = quotas
        .patch(
            "opsmesh-budget",
            &PatchParams::default(),
            &Patch::Apply(&quota),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(err).0, 422);
    // Quota status is maintained.
    let q = quotas.get("opsmesh-budget").await.unwrap();
    assert_eq!(q.status.unwrap().used.unwrap()["pods"].0, "3");
}

#[tokio::test]
async fn create_and_delete_with_errors_like_an_api_server() {
    let r = common::start(common::TWO_TEAMS, SimConfig::default()).await;
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "ml-team-b");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "debug", "labels": {"role": "debug"}},
        "spec": {"containers": [{"name": "sh", "image": "busybox", "resources": {"limits": {"memory": "64Mi"}}}]},
    }))
    .unwrap();
    let dry = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod,
        )
        .await
        .unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("debug"));
    assert!(
        pods.get_opt("debug").await.unwrap().is_none(),
        "dry run stores nothing"
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let (code, reason, _) = api_error(pods.create(&PostParams::default(), &pod).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let elsewhere: Api<Pod> = Api::namespaced(r.client.clone(), "no-such-ns");
    assert_eq!(
        api_error(
            elsewhere
                .create(&PostParams::default(), &pod)
                .await
                .unwrap_err()
        )
        .0,
        404
    );
    let mut bad = pod.clone();
    bad.metadata.name = Some("Not_A_Name".into());
    assert_eq!(
        api_error(pods.create(&PostParams::default(), &bad).await.unwrap_err()).0,
        422
    );
    pods.delete("debug", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_error(
            pods.delete("debug", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .0,
        404
    );
}

#[tokio::test]
async fn rbac_allow_list_answers_403_for_everything_else() {
    let rbac = Rbac {
        subject: "system:serviceaccount:opsmesh:opsmesh-remediator".into(),
        rules: vec![
            RbacRule {
                verbs: vec!["get".into(), "list".into(), "patch".into()],
                resources: vec!["inferenceservices.serving.kserve.io".into()],
                namespaces: vec!["ml-team-a".into()],
            },
            RbacRule {
                verbs: vec!["list".into()],
                resources: vec!["pods".into()],
                namespaces: vec![],
            },
        ],
    };
    let r = common::start(
        common::TWO_TEAMS,
        SimConfig {
            rbac: Some(rbac),
            ..SimConfig::default()
        },
    )
    .await;
    let team_a: Api<DynamicObject> =
        Api::namespaced_with(r.client.clone(), "ml-team-a", &isvc_resource());
    team_a
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("granted");
    let (code, reason, message) = api_error(
        team_a
            .delete("embedder", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "inferenceservices.serving.kserve.io \"embedder\" is forbidden: User \"system:serviceaccount:opsmesh:opsmesh-remediator\" cannot delete resource \"inferenceservices\" in API group \"serving.kserve.io\" in the namespace \"ml-team-a\""
    );
    let team_b: Api<DynamicObject> =
        Api::namespaced_with(r.client.clone(), "ml-team-b", &isvc_resource());
    assert_eq!(
        api_error(team_b.get("llama-3-8b").await.unwrap_err()).0,
        403,
        "namespace not granted"
    );
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "ml-team-b");
    pods.list(&ListParams::default())
        .await
        .expect("list pods granted everywhere");
    assert_eq!(api_error(pods.get("x").await.unwrap_err()).0, 403);
    // Every refused call is logged (the delete and both reads); granted reads are not.
    let log = r.sim.requests();
    let refused: Vec<&str> = log
        .iter()
        .filter(|l| l.status == 403)
        .map(|l| l.verb.as_str())
        .collect();
    assert_eq!(refused, ["delete", "get", "get"]);
    assert_eq!(log.iter().filter(|l| l.status == 200).count(), 1);
}
