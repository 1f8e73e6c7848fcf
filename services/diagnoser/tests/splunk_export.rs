//! The Splunk evidence client against a test server speaking the export API: streamed NDJSON
//! rows, message frames, Splunk's error bodies and status codes.

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;

use opsmesh_diagnoser::splunk::{SearchError, SplunkClient, SplunkConfig, model_search};

const TOKEN: &str = "splunk-search-token";

#[derive(Default)]
struct Seen {
    searches: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ExportForm {
    search: String,
    earliest_time: Option<String>,
    output_mode: Option<String>,
}

async fn export(
    seen: web::Data<Mutex<Seen>>,
    request: HttpRequest,
    form: web::Form<ExportForm>,
) -> HttpResponse {
    let authorized = request
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorized {
        return HttpResponse::Unauthorized()
            .json(json!({"messages":[{"type":"WARN","text":"call not properly authenticated"}]}));
    }
    seen.lock().unwrap().searches.push(form.search.clone());
    if form.output_mode.as_deref() != Some("json") || form.earliest_time.is_none() {
        return HttpResponse::BadRequest()
            .json(json!({"messages":[{"type":"ERROR","text":"bad request"}]}));
    }
    let search = form.search.as_str();
    // Splunk returns nothing for searches that start with neither `search` nor `|`.
    if !(search.starts_with("search ") || search.starts_with('|')) {
        return HttpResponse::Ok().content_type("application/json").body("");
    }
    if search.contains("busy") {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"messages":[{"type":"ERROR","text":"Search not executed: The maximum number of concurrent historical searches has been reached."}]}));
    }
    if search.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if search.contains("broken") {
        let body = "{\"preview\":false,\"offset\":0,\"result\":{\"a\":\"1\"}}\n{\"messages\":[{\"type\":\"FATAL\",\"text\":\"Error in 'stats' command: bad\"}]}\n";
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(body);
    }
    let mut body = String::from(
        "{\"messages\":[{\"type\":\"INFO\",\"text\":\"Your timerange was substituted\"}]}\n",
    );
    for i in 0..5 {
        let last = if i == 4 { ",\"lastrow\":true" } else { "" };
        body.push_str(&format!(
            "{{\"preview\":false,\"offset\":{i},\"result\":{{\"restarts\":\"{}\",\"reason\":[\"OOMKilled\",\"Error\"]}}{last}}}\n",
            7 + i
        ));
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

async fn server() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let data = web::Data::from(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/services/search/v2/jobs/export", web::post().to(export))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (url, seen)
}

fn client(url: &str, token: &str, max_rows: usize) -> SplunkClient {
    SplunkClient::new(&SplunkConfig {
        url: Some(url.into()),
        token: Some(token.into()),
        timeout: Duration::from_secs(1),
        max_rows,
        ..SplunkConfig::default()
    })
    .unwrap()
    .expect("configured")
}

#[tokio::test]
async fn rows_stream_in_with_multivalue_fields_and_messages() {
    let (url, _) = server().await;
    let results = client(&url, TOKEN, 100)
        .run(&model_search("opsmesh", "-1h", "ml-team-a", "gpt-oss-120b"))
        .await
        .unwrap();
    assert_eq!(results.rows.len(), 5);
    assert_eq!(results.rows[0]["restarts"], "7");
    assert_eq!(results.rows[0]["reason"], json!(["OOMKilled", "Error"]));
    assert_eq!(results.messages, ["INFO: Your timerange was substituted"]);
    assert!(!results.truncated);
}

#[tokio::test]
async fn the_row_limit_stops_reading() {
    let (url, _) = server().await;
    let results = client(&url, TOKEN, 2)
        .run(&model_search("opsmesh", "-1h", "a", "b"))
        .await
        .unwrap();
    assert_eq!(results.rows.len(), 2);
    assert!(results.truncated);
}

#[tokio::test]
async fn the_escaped_spl_reaches_splunk_unchanged() {
    let (url, seen) = server().await;
    let search = model_search("opsmesh", "-1h", "x\" OR index=* | delete", "m");
    client(&url, TOKEN, 10).run(&search).await.unwrap();
    assert_eq!(seen.lock().unwrap().searches, [search.spl]);
}

#[tokio::test]
async fn errors_are_typed() {
    let (url, _) = server().await;
    let run = |token: &str, name: &str| {
        let c = client(&url, token, 10);
        let s = model_search("opsmesh", "-1h", "a", name);
        async move { c.run(&s).await }
    };
    assert!(matches!(
        run("wrong", "m").await,
        Err(SearchError::Unauthorized { status: 401 })
    ));
    match run(TOKEN, "busy").await {
        Err(SearchError::Busy {
            status: 503,
            message,
        }) => assert!(message.contains("concurrent"), "{message}"),
        other => panic!("{other:?}"),
    }
    match run(TOKEN, "broken").await {
        Err(SearchError::Failed(message)) => {
            assert!(message.contains("FATAL: Error in 'stats'"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(TOKEN, "slow").await,
        Err(SearchError::Timeout(_))
    ));
    let closed = format!("http://127.0.0.1:{}", {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let unreachable = client(&closed, TOKEN, 10)
        .run(&model_search("opsmesh", "-1h", "a", "m"))
        .await;
    assert!(
        matches!(unreachable, Err(SearchError::Unreachable(_))),
        "{unreachable:?}"
    );
}
