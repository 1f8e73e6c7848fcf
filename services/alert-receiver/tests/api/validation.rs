use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn only_json_content_types_are_accepted_others_are_415() {
    let app = spawn_app().await;
    for (sid, content_type, expected) in [
        ("a", "application/x-www-form-urlencoded", 415),
        ("b", "text/plain", 415),
        ("c", "application/jsonx", 415),
        ("d", "application/+jso", 415),
        ("e", "application/json; charset=utf-8", 202),
        ("f", "Application/JSON", 202),
        ("g", "application/vnd.splunk+JSON", 202),
    ] {
        let mut body = sample("splunk-webhook.json");
        body["sid"] = json!(sid);
        let body = serde_json::to_vec(&body).unwrap();
        let response = app
            .client
            .post(app.url("/v1/alerts/splunk"))
            .header("Content-Type", content_type)
            .header(
                opsmesh_alert_receiver::SIGNATURE_HEADER,
                opsmesh_alert_receiver::sign(SECRET, now(), &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(read(response).await.0, expected, "{content_type}");
    }
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 4096).await;
    let mut body = sample("splunk-webhook.json");
    body["result"]["blob"] = json!("x".repeat(5000));
    let (status, problem) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 413);
    assert!(
        problem["detail"].as_str().unwrap().contains("4096"),
        "{problem}"
    );
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let (status, problem) = read(
        app.post_signed_bytes("/v1/alerts/splunk", b"{\"sid\": ".to_vec(), SECRET, now())
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        problem["type"],
        "https://opsmesh.dev/problems/malformed-json"
    );
}

#[tokio::test]
async fn deep_nesting_is_400() {
    let app = spawn_app().await;
    let body = format!(
        "{{\"sid\":\"x\",\"result\":{}{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let (status, problem) = read(
        app.post_signed_bytes("/v1/alerts/splunk", body.into_bytes(), SECRET, now())
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nesting deeper than 32"),
        "{problem}"
    );
}

#[tokio::test]
async fn invalid_utf8_is_400() {
    let app = spawn_app().await;
    let mut body = b"{\"sid\":\"x\",\"result\":{\"a\":\"".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(b"\"}}");
    let (status, problem) = read(
        app.post_signed_bytes("/v1/alerts/splunk", body, SECRET, now())
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("UTF-8"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_missing_sid_names_the_field() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body.as_object_mut().unwrap().remove("sid");
    let (status, problem) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 422);
    assert_eq!(problem["pointer"], "/sid");
}

#[tokio::test]
async fn a_results_link_that_is_not_http_is_refused() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["results_link"] = json!("file:///etc/passwd");
    let (status, problem) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 422);
    assert_eq!(problem["pointer"], "/results_link");
}

#[tokio::test]
async fn a_nested_object_in_a_row_is_refused() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["result"]["nested"] = json!({"a": "b"});
    let (status, problem) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 422);
    assert_eq!(problem["pointer"], "/result/nested");
}
