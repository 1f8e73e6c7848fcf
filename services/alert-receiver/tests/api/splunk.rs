use opsmesh_alert_receiver::{SIGNATURE_HEADER, sign};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn the_alert_action_payload_is_accepted_with_all_rows_and_published() {
    let app = spawn_app().await;
    let stdin = sample("splunk-alert-action-stdin.json");
    // What bin/opsmesh.py posts: the alert fields plus every row of results_file.
    let body = json!({
        "sid": stdin["sid"], "search_name": stdin["search_name"], "app": stdin["app"],
        "owner": stdin["owner"], "results_link": stdin["results_link"],
        "server_host": stdin["server_host"], "cluster": "prod-eu-1", "severity": "high",
        "entity_fields": [], "result": stdin["result"],
        "rows": [
            stdin["result"],
            {"_time": "1718035200", "model_name": "llama-3-8b", "namespace": "ml-team-b", "error_rate": "0.07", "restarts": "2"}
        ],
        "rows_truncated": false, "sent_at": now()
    });
    let (status, reply) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202, "{reply}");
    let published = app.published();
    assert_eq!(published.len(), 1);
    let alert = &published[0];
    assert_eq!(reply["alert_ids"][0], alert["id"]);
    assert_eq!(reply["incident_key"], alert["incident_id"]);
    let payload = &alert["payload"];
    assert_eq!(payload["source_kind"], "splunk_alert_action");
    assert_eq!(payload["source"], "splunk");
    assert_eq!(payload["severity"], "high");
    assert_eq!(
        payload["rows"].as_array().unwrap().len(),
        2,
        "all rows kept"
    );
    assert_eq!(payload["entity"]["kind"], "inferenceservice");
    assert_eq!(payload["entity"]["name"], "gpt-oss-120b");
    assert_eq!(payload["entity"]["cluster"], "prod-eu-1");
    assert_eq!(alert["cluster"], "prod-eu-1");
}

#[tokio::test]
async fn the_builtin_webhook_body_is_accepted_through_the_path_token() {
    let app = spawn_app().await;
    let body = sample("splunk-webhook.json");
    let response = app
        .client
        .post(app.url(&format!("/v1/alerts/splunk/splunk/{PATH_TOKEN}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, reply) = read(response).await;
    assert_eq!(status, 202, "{reply}");
    let payload = &app.published()[0]["payload"];
    assert_eq!(payload["source_kind"], "splunk_webhook");
    assert_eq!(payload["name"], "KServe model error rate above 5%");
    assert_eq!(payload["rows"][0]["error_rate"], "0.31");
    assert_eq!(payload["results_link"], body["results_link"]);
}

#[tokio::test]
async fn a_null_search_name_is_named_after_the_sid() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["search_name"] = Value::Null;
    let (status, _) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202);
    let name = app.published()[0]["payload"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with("adhoc search scheduler__admin__search__RMD5"),
        "{name}"
    );
}

#[tokio::test]
async fn multivalue_fields_and_unicode_are_kept() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["result"]["pods"] = json!(["gpt-oss-120b-predictor-0", "gpt-oss-120b-predictor-1"]);
    body["result"]["message"] = json!("Mémoire dépassée — 内存不足 🚨");
    body["result"]["count"] = json!(7);
    let (status, _) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202);
    let row = &app.published()[0]["payload"]["rows"][0];
    assert_eq!(
        row["pods"],
        json!(["gpt-oss-120b-predictor-0", "gpt-oss-120b-predictor-1"])
    );
    assert_eq!(row["message"], "Mémoire dépassée — 内存不足 🚨");
    assert_eq!(row["count"], "7", "numbers kept as their text");
}

#[tokio::test]
async fn an_action_body_without_rows_takes_its_entity_from_result() {
    // What the alert action sends when even one row exceeds its body limit.
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["rows"] = json!([]);
    body["rows_truncated"] = json!(true);
    let (status, _) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202);
    let payload = &app.published()[0]["payload"];
    assert_eq!(payload["entity"]["namespace"], "ml-team-a");
    assert_eq!(payload["entity"]["name"], "gpt-oss-120b");
    assert_eq!(payload["rows"][0]["model_name"], "gpt-oss-120b");
    assert_eq!(payload["rows_truncated"], true);
}

#[tokio::test]
async fn rows_beyond_the_limit_are_dropped_and_marked() {
    let app = spawn_app_with(|c| c.max_rows = 2).await;
    let mut body = sample("splunk-webhook.json");
    body["rows"] = json!([body["result"], body["result"], body["result"]]);
    let (status, _) = read(app.post_signed(&body).await).await;
    assert_eq!(status, 202);
    let payload = &app.published()[0]["payload"];
    assert_eq!(payload["rows"].as_array().unwrap().len(), 2);
    assert_eq!(payload["rows_truncated"], true);
}

#[tokio::test]
async fn the_same_delivery_twice_is_published_once_with_the_same_id() {
    let app = spawn_app().await;
    let body = sample("splunk-webhook.json");
    let (_, first) = read(app.post_signed(&body).await).await;
    // A retry is signed anew (new timestamp) but carries the same sid and row.
    let (status, second) = read(
        app.post_signed_bytes(
            "/v1/alerts/splunk",
            serde_json::to_vec(&body).unwrap(),
            SECRET,
            now() - 1,
        )
        .await,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(first["alert_ids"], second["alert_ids"]);
    assert_eq!(app.published().len(), 1);
}

#[tokio::test]
async fn the_same_search_run_with_other_rows_is_a_new_delivery() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    let (_, first) = read(app.post_signed(&body).await).await;
    // Same sid: a multivalue field instead of a single value, then another value.
    body["result"]["error_rate"] = json!(["0.31"]);
    let (_, second) = read(app.post_signed(&body).await).await;
    body["result"]["error_rate"] = json!("0.99");
    let (_, third) = read(app.post_signed(&body).await).await;
    assert_ne!(first["alert_ids"], second["alert_ids"]);
    assert_ne!(second["alert_ids"], third["alert_ids"]);
    assert_eq!(app.published().len(), 3);
}

#[tokio::test]
async fn concurrent_duplicates_are_published_once() {
    let app = spawn_app().await;
    let body = sample("splunk-webhook.json");
    let bytes = serde_json::to_vec(&body).unwrap();
    let t = now();
    let sends =
        (0..8).map(|i| app.post_signed_bytes("/v1/alerts/splunk", bytes.clone(), SECRET, t - i));
    let replies = futures::future::join_all(sends).await;
    let mut ids = Vec::new();
    for response in replies {
        let (status, reply) = read(response).await;
        assert_eq!(status, 202);
        ids.push(reply["alert_ids"][0].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every copy answered with the first id");
    assert_eq!(app.published().len(), 1);
}

#[tokio::test]
async fn the_same_condition_later_keeps_its_incident_key() {
    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    let (_, first) = read(app.post_signed(&body).await).await;
    body["sid"] = json!("scheduler__admin__search__RMD5c3e1d8a2f0b7e914_at_1718035800_4124");
    body["result"]["error_rate"] = json!("0.44");
    body["result"]["_time"] = json!("1718035500");
    let (_, second) = read(app.post_signed(&body).await).await;
    assert_ne!(first["alert_ids"], second["alert_ids"], "a new delivery");
    assert_eq!(
        first["incident_key"], second["incident_key"],
        "same fingerprint"
    );
}

#[tokio::test]
async fn a_body_that_arrives_in_pieces_is_read_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let mut body = sample("splunk-webhook.json");
    body["sid"] = json!("scheduler__admin__search__sent_in_pieces");
    let body = serde_json::to_vec(&body).unwrap();
    let head = format!(
        "POST /v1/alerts/splunk HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{SIGNATURE_HEADER}: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        sign(SECRET, now(), &body)
    );
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // Three writes with pauses between them: the server reads three chunks.
    for piece in body.chunks(body.len().div_ceil(3)) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let published = app.published();
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0]["payload"]["sid"],
        "scheduler__admin__search__sent_in_pieces"
    );
    assert_eq!(published[0]["payload"]["rows"][0]["error_rate"], "0.31");
}
