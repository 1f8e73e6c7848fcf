use serde_json::json;

use crate::helpers::*;

async fn post(app: &TestApp, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let response = app
        .client
        .post(app.url("/v1/alerts/alertmanager"))
        .bearer_auth(BEARER)
        .json(body)
        .send()
        .await
        .unwrap();
    read(response).await
}

#[tokio::test]
async fn each_alert_of_a_group_becomes_one_alert_with_its_own_fingerprint() {
    let app = spawn_app().await;
    let mut body = sample("alertmanager-webhook.json");
    let mut second = body["alerts"][0].clone();
    second["labels"]["inferenceservice"] = json!("llama-3-8b");
    second["fingerprint"] = json!("d00d00d00d00d00d");
    body["alerts"].as_array_mut().unwrap().push(second);
    let (status, reply) = post(&app, &body).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        reply["incident_keys"],
        json!(["c1a2b3d4e5f60718", "d00d00d00d00d00d"])
    );
    let published = app.published();
    assert_eq!(published.len(), 2);
    let payload = &published[0]["payload"];
    assert_eq!(payload["source_kind"], "alertmanager");
    assert_eq!(
        payload["fingerprint"], "c1a2b3d4e5f60718",
        "Alertmanager's fingerprint honoured"
    );
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["entity"]["name"], "gpt-oss-120b");
    assert_eq!(
        payload["annotations"]["summary"],
        "error rate above 5% for 5m"
    );
}

#[tokio::test]
async fn a_resolved_alert_is_carried_as_a_resolution() {
    let app = spawn_app().await;
    let mut body = sample("alertmanager-webhook.json");
    let (status, _) = post(&app, &body).await;
    assert_eq!(status, 202);
    body["status"] = json!("resolved");
    body["alerts"][0]["status"] = json!("resolved");
    body["alerts"][0]["endsAt"] = json!("2026-11-20T02:30:00Z");
    let (status, _) = post(&app, &body).await;
    assert_eq!(status, 202);
    let published = app.published();
    assert_eq!(
        published.len(),
        2,
        "the resolution is a delivery of its own"
    );
    assert_eq!(published[1]["payload"]["status"], "resolved");
    assert_eq!(published[0]["incident_id"], published[1]["incident_id"]);
}

#[tokio::test]
async fn the_same_notification_twice_is_published_once() {
    let app = spawn_app().await;
    let body = sample("alertmanager-webhook.json");
    let (_, first) = post(&app, &body).await;
    let (_, second) = post(&app, &body).await;
    assert_eq!(first["alert_ids"], second["alert_ids"]);
    assert_eq!(app.published().len(), 1);
}

#[tokio::test]
async fn a_wrong_version_names_the_field() {
    let app = spawn_app().await;
    let mut body = sample("alertmanager-webhook.json");
    body["version"] = json!("3");
    let (status, problem) = post(&app, &body).await;
    assert_eq!(status, 422);
    assert_eq!(problem["pointer"], "/version");
}
