//! The public door under hostile use: slow clients, metrics off the public listener, request
//! caps, default rate limits, failed-authentication lockouts and tables that stay bounded.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

/// Reads from `stream` until the server closes it or `limit` passes; returns what was read
/// and whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return (String::from_utf8_lossy(&answer).into_owned(), false),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&answer).into_owned(), true),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
}

async fn slow_app() -> TestApp {
    spawn_app_with_http(
        |_| {},
        |http| {
            http.header_timeout = Duration::from_millis(500);
            http.body_timeout = Duration::from_millis(800);
        },
    )
    .await
}

#[tokio::test]
async fn a_client_dribbling_headers_is_cut_off_at_the_header_timeout() {
    let app = slow_app().await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /v1/alerts/splunk HTTP/1.1\r\nHost: receiver\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let dribble = async {
        for n in 0.. {
            let header = format!("X-Slow-{n}: a\r\n");
            if slow.write_all(header.as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        slow
    };
    // Meanwhile the door serves everyone else.
    let alert = sample("splunk-webhook.json");
    let (mut slow, response) = tokio::join!(dribble, app.post_signed(&alert));
    assert_eq!(response.status(), 202);
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(1)).await;
    assert!(
        closed && started.elapsed() < Duration::from_secs(3),
        "the server should close a connection whose headers never end within \
         http.header_timeout (500ms); closed={closed} after {:?}: {answer:?}",
        started.elapsed()
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_client_dribbling_its_body_is_answered_408_at_the_body_timeout() {
    let app = slow_app().await;
    let body = serde_json::to_vec(&sample("splunk-webhook.json")).unwrap();
    let signature = opsmesh_alert_receiver::sign(SECRET, now(), &body);
    let head = format!(
        "POST /v1/alerts/splunk HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n\
         X-Opsmesh-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = slow.split();
    let dribble = async {
        for byte in &body {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let answer = async {
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::select! {
        answer = answer => answer,
        () = dribble => String::from("the whole body was accepted, byte by byte"),
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}; http.body_timeout is 800ms",
        started.elapsed()
    );
    assert!(
        app.published().is_empty(),
        "nothing of a body cut short is published"
    );
    let response = app.post_signed(&sample("splunk-webhook.json")).await;
    assert_eq!(response.status(), 202, "others are still served");
}

#[tokio::test]
async fn health_and_metrics_are_on_the_admin_listener_only() {
    let app = spawn_app().await;
    for path in ["/metrics", "/readyz", "/healthz"] {
        let public = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(public.status(), 404, "{path} on the public listener");
        let admin = app
            .client
            .get(format!("{}{path}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200, "{path} on the admin listener");
    }
    let alerts_on_admin = app
        .client
        .post(format!("{}/v1/alerts/splunk", app.admin))
        .json(&sample("splunk-webhook.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        alerts_on_admin.status(),
        404,
        "no alerts on the admin listener"
    );
}

fn alertmanager_group(alerts: usize) -> serde_json::Value {
    let template = sample("alertmanager-webhook.json");
    let mut body = template.clone();
    body["alerts"] = (0..alerts)
        .map(|n| {
            let mut alert = template["alerts"][0].clone();
            alert["fingerprint"] = json!(format!("{n:016x}"));
            alert
        })
        .collect();
    body
}

async fn post_alertmanager(app: &TestApp, body: &serde_json::Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/alerts/alertmanager"))
        .bearer_auth(BEARER)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_group_over_the_alert_cap_is_413_naming_the_limit_and_publishes_nothing() {
    let app = spawn_app_with(|config| config.max_alerts_per_request = 3).await;
    let (status, problem) = read(post_alertmanager(&app, &alertmanager_group(4)).await).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["pointer"], "/alerts");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("receiver.max_alerts_per_request") && detail.contains("at most 3"),
        "{detail}"
    );
    assert!(app.published().is_empty());
    let (status, _) = read(post_alertmanager(&app, &alertmanager_group(3)).await).await;
    assert_eq!(status, 202, "at the cap is fine");
    assert_eq!(app.published().len(), 3);
}

#[tokio::test]
async fn sources_are_rate_limited_by_default() {
    // The test sources are configured without any rate setting: the defaults apply.
    let app = spawn_app().await;
    let requests = (0..600).map(|_| {
        app.client
            .post(app.url("/v1/alerts/alertmanager"))
            .bearer_auth(BEARER)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let limited: Vec<_> = responses
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.status() == 429)
        .collect();
    assert!(
        !limited.is_empty(),
        "600 requests at once are over the default 100/s with a burst of 200"
    );
    assert!(limited[0].headers().contains_key("retry-after"));
}

async fn post_bearer(app: &TestApp, token: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/alerts/alertmanager"))
        .bearer_auth(token)
        .json(&sample("alertmanager-webhook.json"));
    if let Some(address) = forwarded_for {
        request = request.header("X-Forwarded-For", address);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_peer_failing_to_authenticate_is_locked_out_even_with_a_valid_token() {
    let app = spawn_app_with(|config| {
        config.failed_auth.max_failures = 3;
        config.failed_auth.window = Duration::from_secs(2);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(post_bearer(&app, "guess", None).await.status(), 403);
    }
    let locked = post_bearer(&app, BEARER, None).await;
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, problem) = read(locked).await;
    assert_eq!(status, 429, "{problem}");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("receiver.failed_auth.max_failures"),
        "{problem}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        sample_value(&metrics, "opsmesh_receiver_auth_locked_out_total"),
        1.0
    );
    assert!(app.published().is_empty());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        post_bearer(&app, BEARER, None).await.status(),
        202,
        "the window passed"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_peer_is_counted_alone() {
    let app = spawn_app_with(|config| {
        config.failed_auth.max_failures = 2;
        config.failed_auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        let response = post_bearer(&app, "guess", Some("203.0.113.7")).await;
        assert_eq!(response.status(), 403);
    }
    let guesser = post_bearer(&app, BEARER, Some("203.0.113.7")).await;
    assert_eq!(guesser.status(), 429, "the guessing peer is locked out");
    // A client-written entry left of the proxy's does not pick whom to blame.
    let spoofed = post_bearer(&app, BEARER, Some("198.51.100.1, 203.0.113.7")).await;
    assert_eq!(spoofed.status(), 429);
    let other = post_bearer(&app, BEARER, Some("203.0.113.8")).await;
    assert_eq!(
        other.status(),
        202,
        "another sender behind the same proxy is not"
    );
}

#[tokio::test]
async fn tables_keyed_by_input_stay_at_their_caps_and_count_evictions() {
    let app = spawn_app_with(|config| {
        config.dedup_capacity = 5;
        config.replay_capacity = 5;
        config.failed_auth.max_peers = 10;
        config.failed_auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    for n in 0..20 {
        let mut body = sample("splunk-webhook.json");
        body["sid"] = json!(format!("scheduler__flood_{n}"));
        assert_eq!(app.post_signed(&body).await.status(), 202);
    }
    for n in 0..50 {
        let peer = format!("203.0.113.{n}");
        assert_eq!(post_bearer(&app, "guess", Some(&peer)).await.status(), 403);
    }
    let metrics = app.metrics().await;
    for (table, cap, evicted) in [
        ("deliveries", 5.0, 15.0),
        ("signatures", 5.0, 15.0),
        ("failed_auth_peers", 10.0, 40.0),
    ] {
        let entries = format!("opsmesh_receiver_table_entries{{table=\"{table}\"}}");
        let evictions = format!("opsmesh_receiver_table_evictions_total{{table=\"{table}\"}}");
        assert_eq!(sample_value(&metrics, &entries), cap, "{table}: {metrics}");
        assert_eq!(
            sample_value(&metrics, &evictions),
            evicted,
            "{table}: {metrics}"
        );
    }
}
