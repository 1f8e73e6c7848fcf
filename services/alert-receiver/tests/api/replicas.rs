//! Receiver replicas behind one load balancer: each has its own dedup table, so a sender's
//! retry can land on a replica that never saw the first attempt. The alert id is derived from
//! the delivery, so both replicas publish the same id and consumers keep one alert.

use serde_json::{Value, json};

use crate::helpers::*;

async fn post_alertmanager(app: &TestApp, body: &Value) -> (u16, Value) {
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

/// The one alert id a `202` answered with, checked against what the replica published.
fn single_id(app: &TestApp, status: u16, reply: &Value) -> String {
    assert_eq!(status, 202, "{reply}");
    let published = app.published();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(reply["alert_ids"][0], published[0]["id"]);
    published[0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_same_splunk_delivery_on_two_replicas_carries_one_id() {
    let (first, second) = (spawn_app().await, spawn_app().await);
    let body = sample("splunk-webhook.json");
    let (status, reply) = read(first.post_signed(&body).await).await;
    let id = single_id(&first, status, &reply);
    // The retry is signed again (a new timestamp), as a sender's retry is.
    let retry = second
        .post_signed_bytes(
            "/v1/alerts/splunk",
            serde_json::to_vec(&body).unwrap(),
            SECRET,
            now() - 1,
        )
        .await;
    let (status, reply) = read(retry).await;
    assert_eq!(single_id(&second, status, &reply), id);
    assert_eq!(
        uuid::Uuid::parse_str(&id).unwrap().get_version_num(),
        7,
        "alert ids stay UUIDv7"
    );

    // Another search run (sid), or the same run with other rows, is another alert.
    let mut other_run = body.clone();
    other_run["sid"] = json!(format!("{}_2", body["sid"].as_str().unwrap()));
    let mut other_rows = body.clone();
    other_rows["result"]["restarts"] = json!("8");
    for (what, other) in [("sid", other_run), ("rows", other_rows)] {
        let (status, reply) = read(second.post_signed(&other).await).await;
        assert_eq!(status, 202, "{reply}");
        assert_ne!(reply["alert_ids"][0].as_str().unwrap(), id, "{what}");
    }
}

#[tokio::test]
async fn the_same_alertmanager_notification_on_two_replicas_carries_one_id() {
    let (first, second) = (spawn_app().await, spawn_app().await);
    let body = sample("alertmanager-webhook.json");
    let (status, reply) = post_alertmanager(&first, &body).await;
    let id = single_id(&first, status, &reply);
    let (status, reply) = post_alertmanager(&second, &body).await;
    assert_eq!(single_id(&second, status, &reply), id);

    // Resolved, or firing again from a new start: other deliveries, other ids.
    let mut resolved = body.clone();
    resolved["status"] = json!("resolved");
    resolved["alerts"][0]["status"] = json!("resolved");
    let mut restarted = body.clone();
    restarted["alerts"][0]["startsAt"] = json!("2026-11-20T03:00:00Z");
    let mut ids = vec![id];
    for other in [resolved, restarted] {
        let (status, reply) = post_alertmanager(&second, &other).await;
        assert_eq!(status, 202, "{reply}");
        ids.push(reply["alert_ids"][0].as_str().unwrap().to_owned());
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
}
