use std::sync::atomic::Ordering;

use crate::helpers::*;

#[tokio::test]
async fn bus_down_answers_503_with_retry_after_and_the_retry_is_stored_once() {
    let app = spawn_app().await;
    app.bus.down.store(true, Ordering::SeqCst);
    let body = sample("splunk-webhook.json");
    let response = app.post_signed(&body).await;
    assert_eq!(response.headers().get("retry-after").unwrap(), "5");
    let (status, problem) = read(response).await;
    assert_eq!(status, 503);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("broker unreachable"),
        "{problem}"
    );
    assert!(
        app.published().is_empty(),
        "never a 2xx for anything not stored"
    );

    // The sender retries once the bus is back: stored, and only once.
    app.bus.down.store(false, Ordering::SeqCst);
    let (status, reply) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202);
    let published = app.published();
    assert_eq!(published.len(), 1);
    assert_eq!(reply["alert_ids"][0], published[0]["id"]);

    // Both answers are counted by status code, which the receiver 5xx alert reads.
    let text = app.metrics().await;
    for code in ["503", "202"] {
        let series =
            format!(r#"opsmesh_receiver_responses_total{{code="{code}",format="splunk"}} 1"#);
        assert!(text.lines().any(|l| l == series), "{series} in {text}");
    }
}

#[tokio::test]
async fn metrics_count_accepted_rejected_and_duplicates() {
    let app = spawn_app().await;
    let body = sample("splunk-webhook.json");
    app.post_signed(&body).await;
    app.post_signed_bytes(
        "/v1/alerts/splunk",
        serde_json::to_vec(&body).unwrap(),
        SECRET,
        now() - 2,
    )
    .await;
    app.client
        .post(app.url("/v1/alerts/splunk"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = app.metrics().await;
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(r#"opsmesh_receiver_alerts_accepted_total{format="splunk",source="splunk"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"opsmesh_receiver_alerts_duplicate_total{format="splunk",source="splunk"} 1"#),
        "{text}"
    );
    assert!(
        has(
            r#"opsmesh_receiver_requests_rejected_total{format="splunk",reason="auth_missing",source="unknown"} 1"#
        ),
        "{text}"
    );
    assert!(has("opsmesh_receiver_publish_seconds_bucket"), "{text}");
}
