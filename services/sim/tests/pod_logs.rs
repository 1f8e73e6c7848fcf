//! Container logs through kube-rs (`Api::<Pod>::logs`) and raw HTTP: what each fault's
//! containers print, the run `previous` picks, `tailLines` / `limitBytes` / `sinceSeconds` /
//! `timestamps`, and the errors kube-apiserver and the kubelet answer with.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Error,
    api::{ListParams, LogParams, PostParams},
};
use opsmesh_sim::SimConfig;
use serde_json::{Value, json};

fn scenario(fault: &str) -> String {
    format!(
        r#"
name: logs
state:
  inference_services:
    - namespace: ml-team-a
      name: gpt-oss-120b
      replicas: 1
      memory_limit: 256Mi
      storage_uri: gs://models/gpt-oss-120b/v1
faults:
{fault}
expect: {{}}
"#
    )
}

const OOM: &str = "  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {memory_demand: 480Mi}}";

async fn started(fault: &str) -> (common::Running, Api<Pod>, String) {
    let r = common::start(&scenario(fault), SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(300));
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "ml-team-a");
    let name = pods
        .list(&ListParams::default().labels("serving.kserve.io/inferenceservice=gpt-oss-120b"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    (r, pods, name)
}

fn params(container: Option<&str>, previous: bool) -> LogParams {
    LogParams {
        container: container.map(str::to_owned),
        previous,
        ..LogParams::default()
    }
}

/// The code and message of the `Status` the API answered with.
fn refused(result: Result<String, Error>) -> (u16, String) {
    match result {
        Err(Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oom_killed_predictor_s_previous_log_ends_loading_its_weights() {
    let (_r, pods, name) = started(OOM).await;
    let previous = pods.logs(&name, &params(None, true)).await.unwrap();
    let lines: Vec<&str> = previous.lines().collect();
    assert_eq!(
        lines[0],
        "INFO kserve: Loading model gpt-oss-120b from /mnt/models"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("Loading safetensors checkpoint shards:  75% Completed | 3/4"),
        "{previous}"
    );
    assert!(!previous.contains("ready"), "{previous}");
    // In CrashLoopBackOff the kubelet serves the last terminated run either way.
    assert_eq!(
        pods.logs(&name, &params(None, false)).await.unwrap(),
        previous
    );

    let tail = pods
        .logs(
            &name,
            &LogParams {
                previous: true,
                tail_lines: Some(2),
                timestamps: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let tail: Vec<&str> = tail.lines().collect();
    assert_eq!(tail.len(), 2);
    assert!(tail[1].ends_with(lines.last().unwrap()), "{tail:?}");
    let (stamp, _) = tail[0].split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamp}"
    );

    let cut = pods
        .logs(
            &name,
            &LogParams {
                previous: true,
                limit_bytes: Some(12),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cut, "INFO kserve:");
    // The last run ended more than a minute ago.
    let recent = pods
        .logs(
            &name,
            &LogParams {
                previous: true,
                since_seconds: Some(10),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(recent, "");
}

#[tokio::test]
async fn a_crash_loop_prints_its_traceback_and_exit_code() {
    let (_r, pods, name) = started(
        "  - {at: 0s, kind: crash_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {exit_code: 3, persistent: true}}",
    )
    .await;
    let log = pods
        .logs(&name, &params(Some("kserve-container"), true))
        .await
        .unwrap();
    assert!(log.contains("Traceback (most recent call last):"), "{log}");
    assert!(
        log.contains("RuntimeError: Engine core initialization failed"),
        "{log}"
    );
    assert!(
        log.ends_with("ERROR kserve: model server exited with code 3\n"),
        "{log}"
    );
}

#[tokio::test]
async fn a_missing_model_shows_in_the_storage_initializer_s_log() {
    let (_r, pods, name) = started(
        "  - {at: 0s, kind: model_load_failure, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {storage_uri: gs://models/gpt-oss-120b/v2-typo}}",
    )
    .await;
    let log = pods
        .logs(&name, &params(Some("storage-initializer"), true))
        .await
        .unwrap();
    assert!(
        log.starts_with(
            "INFO:root:Initializing, args: src_uri [gs://models/gpt-oss-120b/v2-typo] dest_path[ [/mnt/models]\n"
        ),
        "{log}"
    );
    assert!(
        log.ends_with(
            "RuntimeError: Failed to fetch model. No model found in gs://models/gpt-oss-120b/v2-typo.\n"
        ),
        "{log}"
    );
    // The model server never started: the kubelet says why, naming the default container.
    let (code, message) = refused(pods.logs(&name, &params(None, false)).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        format!(
            "container \"kserve-container\" in pod \"{name}\" is waiting to start: PodInitializing"
        )
    );
}

#[tokio::test]
async fn a_healthy_model_server_logs_its_start_and_has_no_previous_container() {
    let (_r, pods, name) = started("  []").await;
    let log = pods.logs(&name, &params(None, false)).await.unwrap();
    assert!(log.contains("Application startup complete."), "{log}");
    assert!(
        log.ends_with("INFO kserve: Model gpt-oss-120b is ready\n"),
        "{log}"
    );
    let (code, message) = refused(pods.logs(&name, &params(None, true)).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        format!("previous terminated container \"kserve-container\" in pod \"{name}\" not found")
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_has_no_log() {
    let (_r, pods, name) = started(
        "  - {at: 0s, kind: image_pull_error, target: inferenceservice/ml-team-a/gpt-oss-120b}",
    )
    .await;
    let (code, message) = refused(pods.logs(&name, &params(None, false)).await);
    assert_eq!(code, 400);
    assert!(
        message.ends_with("is waiting to start: trying and failing to pull image"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_requests_are_answered_as_the_api_server_answers_them() {
    let (r, pods, name) = started(OOM).await;
    let (code, message) = refused(pods.logs("nope", &params(None, false)).await);
    assert_eq!((code, message.as_str()), (404, "pods \"nope\" not found"));
    let (code, message) = refused(pods.logs(&name, &params(Some("sidecar"), false)).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        format!("container sidecar is not valid for pod {name}")
    );
    let (code, message) = refused(
        pods.logs(
            &name,
            &LogParams {
                tail_lines: Some(-1),
                ..LogParams::default()
            },
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(
        message.ends_with("tailLines: Invalid value: -1: must be greater than or equal to 0"),
        "{message}"
    );
    let (code, message) = refused(
        pods.logs(
            &name,
            &LogParams {
                limit_bytes: Some(0),
                ..LogParams::default()
            },
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(message.contains("limitBytes"), "{message}");

    // A pod with two containers needs one named.
    let two: Pod = serde_json::from_value(json!({
        "metadata": {"name": "two"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "sidecar", "image": "proxy:1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &two).await.unwrap();
    let (code, message) = refused(pods.logs("two", &params(None, false)).await);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "a container name must be specified for pod two, choose one of: [app sidecar]"
    );
    assert_eq!(
        pods.logs("two", &params(Some("sidecar"), false))
            .await
            .unwrap(),
        "",
        "no node runs it, so the API server streams nothing"
    );

    // On the wire: text/plain for a log, a Status object for an error.
    let http = reqwest::Client::new();
    let url = format!(
        "{}/api/v1/namespaces/ml-team-a/pods/{name}/log",
        r.server.url()
    );
    let ok = http
        .get(format!("{url}?previous=true&tailLines=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "text/plain");
    assert_eq!(ok.text().await.unwrap().lines().count(), 1);
    let bad = http
        .get(format!("{url}?tailLines=ten"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let status: Value = bad.json().await.unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "BadRequest");
    let put = http.put(&url).send().await.unwrap();
    assert_eq!(put.status(), 405);
}
