//! Each fault kind's symptoms, seen through the real clients, and the effect of each
//! remediation: the simulator must be honest about what fixes what.

mod common;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{Event, Pod},
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    },
};
use opsmesh_sim::SimConfig;
use serde_json::{Value, json};

fn isvcs(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService"),
        "inferenceservices",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

async fn predictor_pods(client: &Client, ns: &str, isvc: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("serving.kserve.io/inferenceservice={isvc}")))
        .await
        .unwrap()
        .items
}

async fn ready(client: &Client, ns: &str, isvc: &str) -> bool {
    let obj = isvcs(client, ns).get(isvc).await.unwrap();
    obj.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn restarts(pods: &[Pod]) -> i32 {
    pods.iter()
        .map(|p| {
            p.status
                .as_ref()
                .unwrap()
                .container_statuses
                .as_ref()
                .unwrap()[0]
                .restart_count
        })
        .sum()
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn last_termination(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.container_statuses.as_ref()?[0]
        .last_state
        .as_ref()?
        .terminated
        .as_ref()?
        .reason
        .clone()
}

fn scenario(fault: &str) -> String {
    format!(
        r#"
name: fault
state:
  namespaces:
    - name: ml-team-a
      hourly_budget_usd: 40
  inference_services:
    - namespace: ml-team-a
      name: gpt-oss-120b
      replicas: 2
      gpu: 1
      memory_limit: 256Mi
      image: registry.example.com/kserve/gpt-oss:1.4.2
      previous_image: registry.example.com/kserve/gpt-oss:1.4.1
      hourly_cost_usd: 12.5
      argocd_app: ml-team-a-models
    - namespace: ml-team-a
      name: embedder
      memory_limit: 512Mi
      hourly_cost_usd: 2.0
  argocd_apps:
    - name: ml-team-a-models
      namespace: ml-team-a
faults:
{fault}
expect: {{}}
"#
    )
}

fn memory_patch(limit: &str) -> Patch<Value> {
    Patch::Merge(json!({"spec": {"predictor": {"containers": [{
        "name": "kserve-container",
        "image": "registry.example.com/kserve/gpt-oss:1.4.2",
        "resources": {"limits": {"memory": limit, "nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
    }]}}}))
}

#[tokio::test]
async fn oom_loop_until_the_limit_reaches_the_demand() {
    let r = common::start(
        &scenario("  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {memory_demand: 480Mi}}"),
        SimConfig::default(),
    )
    .await;
    r.sim.advance(Duration::from_secs(300));
    let pods = predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await;
    assert_eq!(pods.len(), 2);
    assert_eq!(
        restarts(&pods),
        8,
        "4 restarts per pod after 5 minutes of back-off"
    );
    for p in &pods {
        assert_eq!(last_termination(p).as_deref(), Some("OOMKilled"));
        assert_eq!(waiting_reason(p).as_deref(), Some("CrashLoopBackOff"));
    }
    assert!(!ready(&r.client, "ml-team-a", "gpt-oss-120b").await);
    let events = Api::<Event>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().fields("type=Warning,reason=BackOff"))
        .await
        .unwrap();
    assert_eq!(events.items.len(), 2);
    assert_eq!(events.items[0].count, Some(5));

    // Restarts climb with time.
    r.sim.advance(Duration::from_secs(600));
    assert!(restarts(&predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await) > 8);

    // Below the demand: still OOM-looping (fresh pods, same fate).
    let api = isvcs(&r.client, "ml-team-a");
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default(),
        &memory_patch("384Mi"),
    )
    .await
    .unwrap();
    r.sim.advance(Duration::from_secs(120));
    let pods = predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await;
    assert!(
        pods.iter()
            .all(|p| last_termination(p).as_deref() == Some("OOMKilled"))
    );

    // At or above the demand: healthy once started.
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default(),
        &memory_patch("480Mi"),
    )
    .await
    .unwrap();
    r.sim.advance(Duration::from_secs(30));
    let pods = predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await;
    assert_eq!(restarts(&pods), 0);
    assert!(pods.iter().all(|p| last_termination(p).is_none()));
    assert!(ready(&r.client, "ml-team-a", "gpt-oss-120b").await);
}

#[tokio::test]
async fn transient_crash_loop_clears_on_restart_persistent_does_not() {
    let r = common::start(
        &scenario("  - {at: 1m, kind: crash_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {exit_code: 3}}\n  - {at: 1m, kind: crash_loop, target: inferenceservice/ml-team-a/embedder, params: {persistent: true}}"),
        SimConfig::default(),
    )
    .await;
    r.sim.advance(Duration::from_secs(30));
    assert!(
        ready(&r.client, "ml-team-a", "gpt-oss-120b").await,
        "healthy before the fault"
    );
    r.sim.advance(Duration::from_secs(240));
    for isvc in ["gpt-oss-120b", "embedder"] {
        let pods = predictor_pods(&r.client, "ml-team-a", isvc).await;
        assert!(restarts(&pods) > 0);
        assert!(
            pods.iter()
                .all(|p| last_termination(p).as_deref() == Some("Error"))
        );
        assert!(!ready(&r.client, "ml-team-a", isvc).await);
    }
    let pod = &predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await[0];
    let code = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .exit_code;
    assert_eq!(code, 3);

    // Restart both: delete the predictor pods of one, rollout-restart annotation on the other.
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "ml-team-a");
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("serving.kserve.io/inferenceservice=gpt-oss-120b"),
    )
    .await
    .unwrap();
    isvcs(&r.client, "ml-team-a")
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}})),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(60));
    assert!(
        ready(&r.client, "ml-team-a", "gpt-oss-120b").await,
        "transient: a restart fixes it"
    );
    let fresh = predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await;
    assert_eq!(fresh.len(), 2);
    assert_eq!(restarts(&fresh), 0);
    assert!(
        !ready(&r.client, "ml-team-a", "embedder").await,
        "persistent: it does not"
    );
    assert!(restarts(&predictor_pods(&r.client, "ml-team-a", "embedder").await) > 0);

    // A persistent crash comes with the image it began on: another image starts cleanly.
    isvcs(&r.client, "ml-team-a")
        .patch(
            "embedder",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/predictor/containers/0/image", "value": "registry.example.com/kserve/embedder:0.9.0"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(60));
    assert!(
        ready(&r.client, "ml-team-a", "embedder").await,
        "persistent: a rollback to another image ends it"
    );
}

#[tokio::test]
async fn image_pull_error_needs_a_rollback_not_a_restart() {
    let r = common::start(
        &scenario(
            "  - {at: 0s, kind: image_pull_error, target: inferenceservice/ml-team-a/gpt-oss-120b}",
        ),
        SimConfig::default(),
    )
    .await;
    r.sim.advance(Duration::from_secs(180));
    let pods = predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await;
    assert!(
        pods.iter()
            .all(|p| waiting_reason(p).as_deref() == Some("ImagePullBackOff"))
    );
    assert!(
        pods.iter()
            .all(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Pending"))
    );
    assert!(!ready(&r.client, "ml-team-a", "gpt-oss-120b").await);

    let api = isvcs(&r.client, "ml-team-a");
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}),
        ),
    )
    .await
    .unwrap();
    r.sim.advance(Duration::from_secs(60));
    assert!(
        !ready(&r.client, "ml-team-a", "gpt-oss-120b").await,
        "a restart does not help"
    );

    // The image before the failing one: the Deployment's previous ReplicaSet revision.
    let sets = Api::<ReplicaSet>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().labels("serving.kserve.io/inferenceservice=gpt-oss-120b"))
        .await
        .unwrap();
    let first = sets
        .items
        .iter()
        .find(|rs| {
            rs.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"] == "1"
        })
        .expect("revision 1");
    let previous = first
        .spec
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
    assert_eq!(previous, "registry.example.com/kserve/gpt-oss:1.4.1");
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "replace", "path": "/spec/predictor/containers/0/image", "value": previous}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    r.sim.advance(Duration::from_secs(30));
    assert!(
        ready(&r.client, "ml-team-a", "gpt-oss-120b").await,
        "rolled back to the last good image"
    );
}

#[tokio::test]
async fn policy_denial_blocks_pods_until_the_fix() {
    let yaml = r#"
name: deny
state:
  namespaces: [{name: ml-team-b}]
  inference_services:
    - {namespace: ml-team-b, name: llama-3-8b, image: "registry.example.com/kserve/llama:3.8.0"}
  policies:
    - {name: disallow-root-containers, action: enforce}
faults:
  - {at: 0s, kind: policy_denial, target: inferenceservice/ml-team-b/llama-3-8b, params: {policy: disallow-root-containers, reason: "runAsNonRoot must be true"}}
expect: {}
"#;
    let r = common::start(yaml, SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(60));
    assert!(
        predictor_pods(&r.client, "ml-team-b", "llama-3-8b")
            .await
            .is_empty()
    );
    assert!(!ready(&r.client, "ml-team-b", "llama-3-8b").await);
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let reports: Api<DynamicObject> = Api::namespaced_with(r.client.clone(), "ml-team-b", &ar);
    let list = reports.list(&ListParams::default()).await.unwrap();
    let result = &list.items[0].data["results"][0];
    assert_eq!(result["policy"], "disallow-root-containers");
    assert_eq!(result["result"], "fail");
    let events = Api::<Event>::namespaced(r.client.clone(), "ml-team-b")
        .list(&ListParams::default().fields("reason=PolicyViolation"))
        .await
        .unwrap();
    assert!(
        events.items[0]
            .message
            .as_ref()
            .unwrap()
            .contains("runAsNonRoot must be true")
    );
    let cpol = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kyverno.io", "v1", "ClusterPolicy"),
        "clusterpolicies",
    );
    let policy = Api::<DynamicObject>::all_with(r.client.clone(), &cpol)
        .get("disallow-root-containers")
        .await
        .unwrap();
    assert_eq!(policy.data["spec"]["validationFailureAction"], "Enforce");

    // The developer's fix satisfies the policy: pods are admitted.
    isvcs(&r.client, "ml-team-b")
        .patch(
            "llama-3-8b",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"predictor": {"securityContext": {"runAsNonRoot": true}}}}),
            ),
        )
        .await
        .unwrap();
    r.sim.advance(Duration::from_secs(30));
    assert!(ready(&r.client, "ml-team-b", "llama-3-8b").await);
    let list = reports.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items[0].data["results"][0]["result"], "pass");
}

async fn namespace_cost(server: &opsmesh_sim::SimServer, window: &str) -> f64 {
    let body: Value = reqwest::get(format!(
        "{}/allocation/compute?window={window}&aggregate=namespace",
        server.opencost_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(body["code"], 200);
    body["data"][0]["ml-team-a"]["totalCost"].as_f64().unwrap()
}

#[tokio::test]
async fn cost_spike_scale_down_and_quota() {
    let r = common::start(
        &scenario("  - {at: 0s, kind: cost_spike, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {replicas: 8}}"),
        SimConfig::default(),
    )
    .await;
    r.sim.advance(Duration::from_secs(3600));
    assert_eq!(
        predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b")
            .await
            .len(),
        8
    );
    let hourly = namespace_cost(&r.server, "1h").await;
    assert!(
        (hourly - 102.0).abs() < 0.01,
        "8 x 12.5 + 2.0, got {hourly}"
    );
    let per_pod: Value = reqwest::get(format!(
        "{}/allocation/compute?window=1h&aggregate=pod",
        r.server.opencost_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(per_pod["data"][0].as_object().unwrap().len(), 9);
    let bad = reqwest::get(format!(
        "{}/allocation/compute?window=fortnight",
        r.server.opencost_url()
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);

    // Scaling down lowers cost from then on.
    let api = isvcs(&r.client, "ml-team-a");
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"predictor": {"minReplicas": 2}}})),
    )
    .await
    .unwrap();
    r.sim.advance(Duration::from_secs(600));
    let recent = namespace_cost(&r.server, "10m").await * 6.0;
    assert!(
        (recent - 27.0).abs() < 0.01,
        "2 x 12.5 + 2.0 per hour, got {recent}"
    );

    // A quota blocks the next scale-out.
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "opsmesh-cost-guard"}, "spec": {"hard": {"requests.nvidia.com/gpu": "3"}}});
    Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(r.client.clone(), "ml-team-a")
        .patch(
            "opsmesh-cost-guard",
            &PatchParams::apply("opsmesh-remediator"),
            &Patch::Apply(&quota),
        )
        .await
        .unwrap();
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"predictor": {"minReplicas": 8}}})),
    )
    .await
    .unwrap();
    r.sim.advance(Duration::from_secs(600));
    assert_eq!(
        predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b")
            .await
            .len(),
        3
    );
    let events = Api::<Event>::namespaced(r.client.clone(), "ml-team-a")
        .list(&ListParams::default().fields("reason=FailedCreate"))
        .await
        .unwrap();
    assert!(
        events.items[0]
            .message
            .as_ref()
            .unwrap()
            .contains("exceeded quota: opsmesh-cost-guard")
    );
    let capped = namespace_cost(&r.server, "10m").await * 6.0;
    assert!(
        (capped - 39.5).abs() < 0.01,
        "3 x 12.5 + 2.0 per hour, got {capped}"
    );
}

#[tokio::test]
async fn gitops_drift_is_cleared_by_a_sync_through_the_argocd_api() {
    let r = common::start(
        &scenario("  - {at: 1m, kind: gitops_drift, target: application/ml-team-a-models}"),
        SimConfig::default(),
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/applications", r.server.argocd_url());
    let token = r.server.argocd_token().to_owned();
    let get = |name: &str| http.get(format!("{url}/{name}")).bearer_auth(&token).send();
    let app: Value = get("ml-team-a-models").await.unwrap().json().await.unwrap();
    assert_eq!(app["status"]["sync"]["status"], "Synced");
    r.sim.advance(Duration::from_secs(120));
    let app: Value = get("ml-team-a-models").await.unwrap().json().await.unwrap();
    assert_eq!(app["status"]["sync"]["status"], "OutOfSync");
    assert_eq!(app["spec"]["destination"]["namespace"], "ml-team-a");

    let unauthorised = http
        .post(format!("{url}/ml-team-a-models/sync"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    let missing = http
        .get(format!("{url}/nope"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let list: Value = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let synced: Value = http
        .post(format!("{url}/ml-team-a-models/sync"))
        .bearer_auth(&token)
        .json(&json!({"prune": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(synced["status"]["sync"]["status"], "Synced");
    assert_eq!(synced["status"]["operationState"]["phase"], "Succeeded");
    assert_eq!(synced["status"]["history"].as_array().unwrap().len(), 2);

    let rolled = http
        .post(format!("{url}/ml-team-a-models/rollback"))
        .bearer_auth(&token)
        .json(&json!({"id": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(rolled.status(), 200);
    let log = r.sim.requests();
    let verbs: Vec<&str> = log.iter().map(|l| l.verb.as_str()).collect();
    assert_eq!(verbs, ["sync", "sync", "rollback"]);
    assert_eq!(log[0].status, 401);
}

#[tokio::test]
async fn none_is_healthy_and_the_log_stays_empty() {
    let r = common::start(&scenario("  - {at: 0s, kind: none}"), SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(600));
    assert!(ready(&r.client, "ml-team-a", "gpt-oss-120b").await);
    assert!(ready(&r.client, "ml-team-a", "embedder").await);
    assert_eq!(
        restarts(&predictor_pods(&r.client, "ml-team-a", "gpt-oss-120b").await),
        0
    );
    let log: Value = reqwest::get(format!("{}/_sim/requests", r.server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log, json!([]));
}

/// A `Status` as kube-apiserver writes it when it cannot serve.
fn service_unavailable() -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server is currently unable to handle the request",
        "reason": "ServiceUnavailable",
        "code": 503,
    })
}

async fn raw(http: &reqwest::Client, url: String) -> (u16, Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn api_outage_answers_503_status_for_its_duration_of_virtual_time() {
    let r = common::start(
        &scenario("  - {at: 1m, kind: api_outage, params: {duration: 30s}}"),
        SimConfig::default(),
    )
    .await;
    let http = reqwest::Client::new();
    let pods = format!("{}/api/v1/namespaces/ml-team-a/pods", r.server.url());
    assert_eq!(raw(&http, pods.clone()).await.0, 200, "before the outage");

    r.sim.advance(Duration::from_secs(60));
    for url in [
        pods.clone(),
        format!("{}/version", r.server.url()),
        format!("{}/apis", r.server.url()),
        format!("{}/readyz", r.server.url()),
    ] {
        assert_eq!(
            raw(&http, url.clone()).await,
            (503, service_unavailable()),
            "{url}"
        );
    }
    // Raw HTTP: kube-rs's client retries a 503 with backoff on its own.
    let patch = http
        .patch(format!(
            "{}/apis/serving.kserve.io/v1beta1/namespaces/ml-team-a/inferenceservices/gpt-oss-120b",
            r.server.url()
        ))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"during":"outage"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 503);
    assert_eq!(patch.json::<Value>().await.unwrap(), service_unavailable());
    let log = r.sim.requests();
    assert_eq!(log.len(), 1, "the refused write is logged");
    assert_eq!((log[0].verb.as_str(), log[0].status), ("patch", 503));
    // Only Kubernetes by default: ArgoCD and OpenCost still answer.
    let argo = http
        .get(format!("{}/api/v1/applications", r.server.argocd_url()))
        .bearer_auth(r.server.argocd_token())
        .send()
        .await
        .unwrap();
    assert_eq!(argo.status(), 200);
    namespace_cost(&r.server, "10m").await;

    r.sim.advance(Duration::from_secs(29));
    assert_eq!(raw(&http, pods.clone()).await.0, 503, "29 s in");
    r.sim.advance(Duration::from_secs(1));
    assert_eq!(raw(&http, pods).await.0, 200, "over after 30 s");
    assert!(ready(&r.client, "ml-team-a", "embedder").await);
}

#[tokio::test]
async fn api_outage_can_cover_argocd_and_opencost_and_start_after_a_write() {
    let r = common::start(
        &scenario(
            "  - {at: 1m, kind: api_outage, params: {duration: 30s, after_write: true, apis: [kubernetes, argocd, opencost]}}",
        ),
        SimConfig::default(),
    )
    .await;
    let http = reqwest::Client::new();
    let pods = format!("{}/api/v1/namespaces/ml-team-a/pods", r.server.url());
    let api = isvcs(&r.client, "ml-team-a");
    // A write before `at` does not start it.
    api.patch(
        "embedder",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"early": "yes"}}})),
    )
    .await
    .unwrap();
    r.sim.advance(Duration::from_secs(120));
    assert_eq!(raw(&http, pods.clone()).await.0, 200, "armed, not begun");
    // A dry run is not a fix landing.
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default().dry_run(),
        &memory_patch("512Mi"),
    )
    .await
    .unwrap();
    assert_eq!(raw(&http, pods.clone()).await.0, 200, "dry run ignored");
    // The fix lands, and the APIs go down right after it.
    api.patch(
        "gpt-oss-120b",
        &PatchParams::default(),
        &memory_patch("512Mi"),
    )
    .await
    .unwrap();
    assert_eq!(raw(&http, pods.clone()).await, (503, service_unavailable()));
    let argo = http
        .get(format!("{}/api/v1/applications", r.server.argocd_url()))
        .bearer_auth(r.server.argocd_token())
        .send()
        .await
        .unwrap();
    assert_eq!(argo.status(), 503);
    let argo: Value = argo.json().await.unwrap();
    assert_eq!(argo["code"], 14, "gRPC Unavailable");
    let cost = http
        .get(format!(
            "{}/allocation/compute?window=10m&aggregate=namespace",
            r.server.opencost_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cost.status(), 503);

    r.sim.advance(Duration::from_secs(30));
    assert_eq!(raw(&http, pods).await.0, 200, "30 s after the write");
    let state: Value = reqwest::get(format!("{}/_sim/state", r.server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let outage = state["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "api_outage")
        .unwrap();
    assert_eq!(outage["began"], "2m00s", "began at the write, not at `at`");
}

#[test]
fn api_outage_parameters_are_checked() {
    let parse = |fault: &str| opsmesh_sim::Scenario::parse(&scenario(fault), "test.yaml");
    let error = |fault: &str| parse(fault).unwrap_err().to_string();
    assert!(
        error("  - {kind: api_outage}").contains("params.duration is required"),
        "{}",
        error("  - {kind: api_outage}")
    );
    let e = error("  - {kind: api_outage, params: {duration: 30s, apis: [etcd]}}");
    assert!(e.contains("unknown API \"etcd\""), "{e}");
    let e = error(
        "  - {kind: api_outage, target: inferenceservice/ml-team-a/embedder, params: {duration: 30s}}",
    );
    assert!(e.contains("api_outage takes no target"), "{e}");
    let e = error("  - {kind: api_outage, params: {duration: 30s, after_write: 1}}");
    assert!(e.contains("after_write must be true or false"), "{e}");
    assert!(parse("  - {kind: api_outage, params: {duration: 30s, apis: [argocd]}}").is_ok());
}
