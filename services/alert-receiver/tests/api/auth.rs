use opsmesh_alert_receiver::{SIGNATURE_HEADER, sign};

use crate::helpers::*;

async fn post_with(app: &TestApp, headers: &[(&str, String)]) -> (u16, serde_json::Value) {
    let mut request = app
        .client
        .post(app.url("/v1/alerts/splunk"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&sample("splunk-webhook.json")).unwrap());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn missing_credentials_are_401() {
    let app = spawn_app().await;
    let (status, problem) = post_with(&app, &[]).await;
    assert_eq!(status, 401);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no credentials"),
        "{problem}"
    );
    assert!(app.published().is_empty());
}

#[tokio::test]
async fn a_bad_signature_is_403_and_reveals_no_secret() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&sample("splunk-webhook.json")).unwrap();
    let response = app
        .post_signed_bytes("/v1/alerts/splunk", body, "not-the-secret", now())
        .await;
    let text = response.text().await.unwrap();
    assert!(text.contains("does not match any active secret"), "{text}");
    assert!(!text.contains(SECRET) && !text.contains(OLD_SECRET));
    assert!(app.published().is_empty());
}

#[tokio::test]
async fn a_tampered_body_is_403() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&sample("splunk-webhook.json")).unwrap();
    let signature = opsmesh_alert_receiver::sign(SECRET, now(), &body);
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'7').unwrap();
    tampered[at] = b'9';
    let response = app
        .client
        .post(app.url("/v1/alerts/splunk"))
        .header("Content-Type", "application/json")
        .header(opsmesh_alert_receiver::SIGNATURE_HEADER, signature)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(read(response).await.0, 403);
}

#[tokio::test]
async fn an_expired_signature_is_403() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&sample("splunk-webhook.json")).unwrap();
    let (status, problem) = read(
        app.post_signed_bytes("/v1/alerts/splunk", body, SECRET, now() - 301)
            .await,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("replay window is 300 s"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_replayed_signature_is_403() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&sample("splunk-webhook.json")).unwrap();
    let t = now();
    let first = app
        .post_signed_bytes("/v1/alerts/splunk", body.clone(), SECRET, t)
        .await;
    assert_eq!(first.status(), 202);
    let (status, problem) = read(
        app.post_signed_bytes("/v1/alerts/splunk", body, SECRET, t)
            .await,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        problem["detail"].as_str().unwrap().contains("already used"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_replay_with_a_padded_signature_header_is_still_403() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&sample("splunk-webhook.json")).unwrap();
    let t = now();
    let header = sign(SECRET, t, &body);
    let first = app
        .post_signed_bytes("/v1/alerts/splunk", body.clone(), SECRET, t)
        .await;
    assert_eq!(first.status(), 202);
    // The same MAC dressed up differently: an extra bogus candidate, and extra spaces.
    let mac = header.split("v1=").nth(1).unwrap();
    for disguised in [
        format!("t={t},v1={},v1={mac}", "0".repeat(64)),
        format!("t={t}, v1={mac} "),
    ] {
        let response = app
            .client
            .post(app.url("/v1/alerts/splunk"))
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, disguised.clone())
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, problem) = read(response).await;
        assert_eq!(status, 403, "{disguised}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("already used"),
            "{problem}"
        );
    }
    assert_eq!(app.published().len(), 1);
}

#[tokio::test]
async fn secrets_rotate_without_a_restart() {
    let recheck = std::time::Duration::from_millis(100);
    let app = spawn_app_with(|c| c.secrets_recheck = recheck).await;
    let body = sample("splunk-webhook.json");
    let mut next = body.clone();
    // Both secrets of the file are active during the rotation.
    next["sid"] = serde_json::json!("rotation-1");
    let bytes = serde_json::to_vec(&next).unwrap();
    assert_eq!(
        app.post_signed_bytes("/v1/alerts/splunk", bytes, OLD_SECRET, now())
            .await
            .status(),
        202
    );
    // The old secret is retired by rewriting the mounted file.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&app.secrets_file, format!("{SECRET}\n")).unwrap();
    std::thread::sleep(recheck + std::time::Duration::from_millis(50));
    next["sid"] = serde_json::json!("rotation-2");
    let bytes = serde_json::to_vec(&next).unwrap();
    let (status, _) = read(
        app.post_signed_bytes("/v1/alerts/splunk", bytes.clone(), OLD_SECRET, now())
            .await,
    )
    .await;
    assert_eq!(status, 403, "rotated-out secret refused");
    assert_eq!(
        app.post_signed_bytes("/v1/alerts/splunk", bytes, SECRET, now())
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn a_rotation_caught_half_written_keeps_the_previous_secrets() {
    let recheck = std::time::Duration::from_millis(100);
    let app = spawn_app_with(|c| c.secrets_recheck = recheck).await;
    // The mounted file is truncated before its new content is written.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&app.secrets_file, "\n").unwrap();
    std::thread::sleep(recheck + std::time::Duration::from_millis(50));
    let mut body = sample("splunk-webhook.json");
    body["sid"] = serde_json::json!("half-written");
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(
        app.post_signed_bytes("/v1/alerts/splunk", bytes, OLD_SECRET, now())
            .await
            .status(),
        202,
        "an empty secrets file is not a rotation to no secrets"
    );
}

#[tokio::test]
async fn a_secrets_file_and_a_secrets_env_are_both_active() {
    // A variable every `cargo test` process has, so the test sets none.
    let from_env = env!("CARGO_PKG_NAME");
    assert_eq!(std::env::var("CARGO_PKG_NAME").as_deref(), Ok(from_env));
    let app = spawn_app_with(|c| {
        c.sources.get_mut("splunk").unwrap().secrets_env = Some("CARGO_PKG_NAME".into());
    })
    .await;
    for (n, secret) in [SECRET, from_env].into_iter().enumerate() {
        let mut body = sample("splunk-webhook.json");
        body["sid"] = serde_json::json!(format!("both-{n}"));
        let bytes = serde_json::to_vec(&body).unwrap();
        assert_eq!(
            app.post_signed_bytes("/v1/alerts/splunk", bytes, secret, now())
                .await
                .status(),
            202,
            "secret #{n}"
        );
    }
}

#[tokio::test]
async fn the_secrets_file_is_looked_at_once_per_recheck_interval() {
    let app = spawn_app_with(|c| c.secrets_recheck = std::time::Duration::from_secs(3600)).await;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&app.secrets_file, format!("{SECRET}\n")).unwrap();
    let mut body = sample("splunk-webhook.json");
    body["sid"] = serde_json::json!("before-the-recheck");
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(
        app.post_signed_bytes("/v1/alerts/splunk", bytes, OLD_SECRET, now())
            .await
            .status(),
        202,
        "the file is not looked at again before the interval ends"
    );
}

#[tokio::test]
async fn bearer_tokens_authenticate_their_source() {
    let app = spawn_app().await;
    let (status, _) = post_with(&app, &[("Authorization", format!("Bearer {BEARER}"))]).await;
    assert_eq!(status, 202);
    assert_eq!(app.published()[0]["payload"]["source"], "alertmanager");
    let (status, _) = post_with(&app, &[("Authorization", "Bearer wrong".into())]).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn path_tokens_are_checked_and_only_where_configured() {
    let app = spawn_app().await;
    let body = sample("splunk-webhook.json");
    let post = |path: String| app.client.post(app.url(&path)).json(&body).send();
    assert_eq!(
        read(post("/v1/alerts/splunk/splunk/wrong".into()).await.unwrap())
            .await
            .0,
        403
    );
    assert_eq!(
        read(
            post(format!("/v1/alerts/splunk/alertmanager/{PATH_TOKEN}"))
                .await
                .unwrap()
        )
        .await
        .0,
        404,
        "no path token configured for this source"
    );
    assert!(app.published().is_empty());
}

#[tokio::test]
async fn a_source_over_its_rate_is_429_with_retry_after() {
    let app = spawn_app_with(|c| {
        let source = c.sources.get_mut("splunk").unwrap();
        source.rate_limit_per_second = 1;
        source.rate_limit_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for n in 0..4 {
        let mut body = sample("splunk-webhook.json");
        body["sid"] = serde_json::json!(format!("rate-{n}"));
        let response = app.post_signed(&body).await;
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429, 429]);
    assert_eq!(retry_after.as_deref(), Some("1"));
}
