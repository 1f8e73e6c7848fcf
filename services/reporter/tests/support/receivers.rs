//! Local stand-ins for Slack incoming webhooks and the PagerDuty Events API v2, answering with
//! the services' real status codes and bodies, plus a script of failures to play first.

use std::{
    collections::VecDeque,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Instant,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use serde_json::{Value, json};

/// A scripted answer: status, `Retry-After` seconds, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: String,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            status: 429,
            retry_after: Some(retry_after),
            body: "rate_limited".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    /// While set, every request gets this answer (after the script): the service is down.
    outage: Option<Answer>,
    requests: Vec<Request>,
}

#[derive(Clone, Copy)]
enum Kind {
    Slack,
    PagerDuty,
}

pub struct Receiver {
    state: Arc<Mutex<State>>,
    pub url: String,
    handle: ServerHandle,
}

impl Receiver {
    /// Slack: `POST /services/T000/B000/hooktoken` answers `200 ok`; a body without `text` or
    /// `blocks` answers `400 invalid_payload`, an unknown hook `404 no_service`.
    pub async fn slack() -> Self {
        Self::start(Kind::Slack, "/services/T0001/B0001/hooktoken").await
    }

    /// PagerDuty: `POST /v2/enqueue` answers `202 {"status":"success",…}`; an invalid event
    /// `400 {"status":"invalid event",…}`.
    pub async fn pagerduty() -> Self {
        Self::start(Kind::PagerDuty, "/v2/enqueue").await
    }

    async fn start(kind: Kind, path: &'static str) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::Data::new(KindData(kind, path)))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { state, url, handle }
    }

    /// Answers to give, in order, before behaving normally.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// Answers every request with `answer` until [`Receiver::recover`].
    pub fn go_down(&self, answer: Answer) {
        self.state.lock().unwrap().outage = Some(answer);
    }

    pub fn recover(&self) {
        self.state.lock().unwrap().outage = None;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

struct KindData(Kind, &'static str);

async fn handle(
    state: web::Data<Mutex<State>>,
    kind: web::Data<KindData>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    state.requests.push(Request {
        at: Instant::now(),
        path: req.path().to_owned(),
        body: parsed.clone(),
    });
    if let Some(answer) = state.script.pop_front().or_else(|| state.outage.clone()) {
        let mut response =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
        if let Some(secs) = answer.retry_after {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        return response.body(answer.body);
    }
    if req.method() != actix_web::http::Method::POST || req.path() != kind.1 {
        return match kind.0 {
            Kind::Slack => HttpResponse::NotFound().body("no_service"),
            Kind::PagerDuty => HttpResponse::NotFound().finish(),
        };
    }
    match kind.0 {
        Kind::Slack => {
            if parsed.get("text").and_then(Value::as_str).is_none()
                && parsed.get("blocks").is_none()
            {
                HttpResponse::BadRequest().body("invalid_payload")
            } else {
                HttpResponse::Ok().body("ok")
            }
        }
        Kind::PagerDuty => match pagerduty_errors(&parsed) {
            errors if errors.is_empty() => HttpResponse::Accepted().json(json!({
                "status": "success",
                "message": "Event processed",
                "dedup_key": parsed["dedup_key"],
            })),
            errors => HttpResponse::BadRequest().json(json!({
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": errors,
            })),
        },
    }
}

/// What the Events API v2 checks.
fn pagerduty_errors(event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if event["routing_key"].as_str().is_none_or(|k| k.len() != 32) {
        errors.push("'routing_key' must be a 32 character integration key".into());
    }
    match event["event_action"].as_str() {
        Some("trigger") => {
            let payload = &event["payload"];
            for field in ["summary", "source", "severity"] {
                if payload[field].as_str().is_none_or(str::is_empty) {
                    errors.push(format!("'payload.{field}' is missing or blank"));
                }
            }
            if !["critical", "error", "warning", "info"]
                .contains(&payload["severity"].as_str().unwrap_or(""))
            {
                errors.push("'payload.severity' is invalid".into());
            }
            if payload["summary"]
                .as_str()
                .is_some_and(|s| s.chars().count() > 1024)
            {
                errors.push("'payload.summary' is longer than 1024".into());
            }
        }
        Some("acknowledge" | "resolve") => {
            if event["dedup_key"].as_str().is_none_or(str::is_empty) {
                errors.push("'dedup_key' is required for acknowledge and resolve".into());
            }
        }
        _ => errors.push("'event_action' is invalid".into()),
    }
    errors
}
