//! `"opsmesh_test": true` (the Splunk app's "send test alert"): authenticated and validated
//! like any alert, answered `200`, and nothing is published, so no incident opens.

use serde_json::{Value, json};

use crate::helpers::*;

/// What the app's setup page sends (bin/opsmesh_settings.py `send_test_alert`).
fn setup_page_test_alert() -> Value {
    let row = json!({"message": "test alert from the opsmesh setup page"});
    json!({
        "sid": format!("opsmesh_setup_test_{}", now()), "search_name": "opsmesh setup test alert",
        "app": null, "owner": null, "results_link": null, "server_host": null,
        "cluster": "prod-eu-1", "severity": "info", "entity_fields": [], "sent_at": now(),
        "result": row, "rows": [row], "rows_truncated": false, "opsmesh_test": true
    })
}

#[tokio::test]
async fn a_signed_test_alert_is_answered_200_and_opens_no_incident() {
    let app = spawn_app().await;
    let (status, reply) = read(app.post_signed(&setup_page_test_alert()).await).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["test"], true);
    assert_eq!(reply["incident_opened"], false);
    assert_eq!(reply["alert_name"], "opsmesh setup test alert");
    assert_eq!(reply["entity"]["cluster"], "prod-eu-1");
    assert!(
        reply["incident_key"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert!(reply.get("alert_ids").is_none(), "no alert id: {reply}");
    assert!(app.published().is_empty(), "a test alert is not published");
    let metrics = app.metrics().await;
    assert_eq!(
        sample_value(
            &metrics,
            r#"opsmesh_receiver_responses_total{code="200",format="splunk"}"#
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_test_alert_needs_valid_credentials_like_any_alert() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&setup_page_test_alert()).unwrap();
    let unsigned = app
        .client
        .post(app.url("/v1/alerts/splunk"))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let (status, _) = read(
        app.post_signed_bytes("/v1/alerts/splunk", body, "not-the-secret", now())
            .await,
    )
    .await;
    assert_eq!(status, 403);
    assert!(app.published().is_empty());
}

#[tokio::test]
async fn a_test_alert_is_validated_like_any_alert() {
    let app = spawn_app().await;
    let mut body = setup_page_test_alert();
    body.as_object_mut().unwrap().remove("sid");
    let (status, problem) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["pointer"], "/sid");
    assert!(app.published().is_empty());
}

#[tokio::test]
async fn an_accepted_test_signature_cannot_be_replayed() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&setup_page_test_alert()).unwrap();
    let t = now();
    let first = app
        .post_signed_bytes("/v1/alerts/splunk", body.clone(), SECRET, t)
        .await;
    assert_eq!(first.status(), 200);
    let (status, problem) = read(
        app.post_signed_bytes("/v1/alerts/splunk", body, SECRET, t)
            .await,
    )
    .await;
    assert_eq!(status, 403, "{problem}");
}

#[tokio::test]
async fn opsmesh_test_false_is_an_ordinary_alert() {
    let app = spawn_app().await;
    let mut body = setup_page_test_alert();
    body["opsmesh_test"] = json!(false);
    let (status, reply) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(app.published().len(), 1);
}
