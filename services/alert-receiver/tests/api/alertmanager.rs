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
    let keys: Vec<&str> = reply["incident_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(
        keys[0], keys[1],
        "one incident per Alertmanager fingerprint"
    );
    for key in &keys {
        assert!(
            key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
    }
    let published = app.published();
    assert_eq!(published.len(), 2);
    let payload = &published[0]["payload"];
    assert_eq!(payload["source_kind"], "alertmanager");
    assert_eq!(
        payload["fingerprint"], keys[0],
        "the incident key is Alertmanager's fingerprint within its source"
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

#[tokio::test]
async fn one_source_cannot_resolve_another_sources_incident_with_the_same_fingerprint() {
    let other_tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other_tokens.path(), "other-alertmanager-token").unwrap();
    let app = spawn_app_with(|config| {
        config.sources.insert(
            "alertmanager-b".into(),
            opsmesh_alert_receiver::config::SourceConfig {
                bearer_tokens_file: Some(other_tokens.path().to_owned()),
                ..Default::default()
            },
        );
    })
    .await;
    let firing = sample("alertmanager-webhook.json");
    let (status, from_a) = post(&app, &firing).await;
    assert_eq!(status, 202);
    let mut resolved = firing.clone();
    resolved["status"] = json!("resolved");
    resolved["alerts"][0]["status"] = json!("resolved");
    let response = app
        .client
        .post(app.url("/v1/alerts/alertmanager"))
        .bearer_auth("other-alertmanager-token")
        .json(&resolved)
        .send()
        .await
        .unwrap();
    let (status, from_b) = read(response).await;
    assert_eq!(status, 202);
    assert_ne!(
        from_a["incident_key"], from_b["incident_key"],
        "source B's resolution carries the same Alertmanager fingerprint but another incident key"
    );
    let (status, a_resolves) = post(&app, &resolved).await;
    assert_eq!(status, 202);
    assert_eq!(
        from_a["incident_key"], a_resolves["incident_key"],
        "source A's own resolution reaches its incident"
    );
}
