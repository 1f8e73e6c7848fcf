//! Authenticated alerts naming unusable entities (injection attempts, path traversal, control
//! characters, megabytes of text) are accepted and carried for escalation, never refused
//! and lost, and never turned into names.

use serde_json::{Value, json};

use crate::helpers::*;

fn entity_of(app: &TestApp) -> Value {
    let published = app.published();
    assert_eq!(published.len(), 1, "published once");
    published[0]["payload"]["entity"].clone()
}

#[tokio::test]
async fn an_injection_in_a_name_is_accepted_quoted_and_names_nothing() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["result"]["namespace"] = json!("prod; rm -rf /");
    body["result"]["model_name"] = json!("gpt-oss-120b");
    let (status, reply) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202, "{reply}");
    let entity = entity_of(&app);
    assert_eq!(
        entity,
        json!({
            "cluster": "test-cluster",
            "unusable": [{
                "field": "namespace",
                "quoted": "\"prod; rm -rf /\"",
                "truncated": false,
                "reason": entity["unusable"][0]["reason"],
            }]
        }),
        "no namespace, kind or name is kept next to an unusable value"
    );
    assert!(
        entity["unusable"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("RFC 1123"),
        "{entity}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        sample_value(
            &metrics,
            r#"opsmesh_receiver_alerts_unusable_entity_total{format="splunk",source="splunk"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn control_characters_and_long_values_are_escaped_and_cut() {
    let app = spawn_app_with(|config| config.max_unusable_value_chars = 16).await;
    let mut body = sample("splunk-webhook.json");
    body["result"]["model_name"] = json!(format!("bad\u{7}\n<@here>{}", "x".repeat(100_000)));
    let (status, _) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202);
    let unusable = &entity_of(&app)["unusable"][0];
    assert_eq!(unusable["field"], "model_name");
    assert_eq!(
        unusable["quoted"],
        r#""bad\u{7}\u{a}\u{3c}@here\u{3e}xxxx""#
    );
    assert_eq!(unusable["truncated"], true);
}

#[tokio::test]
async fn an_alertmanager_label_with_a_path_is_accepted_as_unusable() {
    let app = spawn_app().await;
    let mut body = sample("alertmanager-webhook.json");
    body["alerts"][0]["labels"]["inferenceservice"] = json!("../../x");
    let response = app
        .client
        .post(app.url("/v1/alerts/alertmanager"))
        .bearer_auth(BEARER)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, reply) = read(response).await;
    assert_eq!(status, 202, "{reply}");
    let entity = entity_of(&app);
    assert_eq!(entity["unusable"][0]["field"], "inferenceservice");
    assert_eq!(entity["unusable"][0]["quoted"], r#""../../x""#);
    assert!(entity.get("namespace").is_none() && entity.get("name").is_none());
}

#[tokio::test]
async fn different_unusable_values_are_different_incidents() {
    let app = spawn_app().await;
    let mut keys = Vec::new();
    for namespace in ["a;b", "a|b"] {
        let mut body = sample("splunk-webhook.json");
        body["result"]["namespace"] = json!(namespace);
        let (status, reply) = read(app.post_signed(&body).await).await;
        assert_eq!(status, 202);
        keys.push(reply["incident_key"].clone());
    }
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn unauthenticated_or_malformed_requests_are_still_refused() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["result"]["namespace"] = json!("prod; rm -rf /");
    let unsigned = app
        .client
        .post(app.url("/v1/alerts/splunk"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let malformed = app
        .post_signed_bytes(
            "/v1/alerts/splunk",
            br#"{"sid": "s", "result": {"namespace": "prod; rm"#.to_vec(),
            SECRET,
            now(),
        )
        .await;
    assert_eq!(malformed.status(), 400);
    assert!(app.published().is_empty());
}
