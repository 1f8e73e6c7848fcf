//! An alert whose message exceeds the bus's size limit can never be stored: it is refused with
//! `413` naming the limit, every time, and never answered `503` (which senders retry until
//! they give up and the alert is lost).

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::helpers::*;

const LIMIT: usize = 4000;

/// A Splunk alert-action body whose rows make its envelope about `bytes` long.
fn splunk_body(bytes: usize) -> Value {
    let mut body = sample("splunk-webhook.json");
    body["rows"] = json!([{"model_name": "gpt-oss-120b", "namespace": "ml-team-a",
        "message": "x".repeat(bytes)}]);
    body
}

#[tokio::test]
async fn an_alert_over_the_bus_limit_is_refused_413_naming_it_and_never_503() {
    let app = spawn_app().await;
    app.bus.max_message_bytes.store(LIMIT, Ordering::SeqCst);
    let body = splunk_body(LIMIT);
    assert!(
        serde_json::to_vec(&body).unwrap().len() < 1024 * 1024,
        "within the body limit"
    );
    for attempt in 0..2 {
        let response = app.post_signed(&body).await;
        assert!(response.headers().get("retry-after").is_none());
        let (status, problem) = read(response).await;
        assert_eq!(status, 413, "attempt {attempt}: {problem}");
        assert_eq!(
            problem["type"],
            "https://opsmesh.dev/problems/alert-too-large"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("limit is {LIMIT} bytes"))
                && detail.contains("bus.kafka.message_max_bytes"),
            "{detail}"
        );
    }
    assert!(app.published().is_empty());

    // Smaller rows fit.
    let (status, reply) = read(app.post_signed(&splunk_body(LIMIT / 4)).await).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(app.published().len(), 1);
}

#[tokio::test]
async fn one_alert_too_large_refuses_its_group_before_any_is_published() {
    let app = spawn_app().await;
    app.bus.max_message_bytes.store(LIMIT, Ordering::SeqCst);
    let mut body = sample("alertmanager-webhook.json");
    let mut large = body["alerts"][0].clone();
    large["fingerprint"] = json!("d00d00d00d00d00d");
    large["annotations"]["description"] = json!("y".repeat(LIMIT));
    body["alerts"].as_array_mut().unwrap().push(large);
    let response = app
        .client
        .post(app.url("/v1/alerts/alertmanager"))
        .bearer_auth(BEARER)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, problem) = read(response).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["pointer"], "/alerts/1", "{problem}");
    assert!(app.published().is_empty(), "nothing of the group published");
}
