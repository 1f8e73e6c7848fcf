//! A Splunk HTTP Event Collector test server speaking the real protocol: token checks with
//! Splunk's codes and bodies, concatenated event envelopes, per-event validation with
//! `invalid-event-number` (events before the bad one are indexed), index allow-list, health,
//! and switchable outages.

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// `503 {"text":"Server is busy","code":9}` for every request.
    Busy,
}

struct State {
    token: String,
    allowed_indexes: Vec<String>,
    indexed: Vec<Value>,
    requests: u64,
    mode: Mode,
}

#[derive(Clone)]
pub struct HecServer {
    state: Arc<Mutex<State>>,
    url: String,
    handle: ServerHandle,
}

impl HecServer {
    pub const TOKEN: &'static str = "00000000-0000-4000-8000-00000000c0de";

    /// Starts on a free loopback port; events are accepted for index `opsmesh`.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            token: Self::TOKEN.into(),
            allowed_indexes: vec!["opsmesh".into()],
            indexed: Vec::new(),
            requests: 0,
            mode: Mode::Normal,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind HEC test server");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/services/collector/event", web::post().to(event))
                .route("/services/collector", web::post().to(event))
                .route("/services/collector/event/1.0", web::post().to(event))
                .route("/services/collector/health", web::get().to(health))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { state, url, handle }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Every indexed event envelope, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().indexed.clone()
    }

    /// Indexed events from position `start` on (what arrived since an earlier call), so a
    /// watcher does not copy everything on every poll.
    pub fn events_from(&self, start: usize) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .indexed
            .get(start..)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    /// Indexed events whose indexed field `incident_id` is `incident`, like
    /// `index=opsmesh incident_id=<id>`.
    pub fn incident(&self, incident: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["fields"]["incident_id"] == incident)
            .collect()
    }

    /// Sourcetypes of an incident's events, in arrival order.
    pub fn sourcetypes(&self, incident: &str) -> Vec<String> {
        self.incident(incident)
            .iter()
            .map(|e| e["sourcetype"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn reply(status: u16, text: &str, code: u32) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"text": text, "code": code}))
}

fn invalid_event(text: &str, code: u32, index: usize) -> HttpResponse {
    HttpResponse::BadRequest()
        .json(json!({"text": text, "code": code, "invalid-event-number": index}))
}

async fn health(state: web::Data<Mutex<State>>) -> HttpResponse {
    match state.lock().unwrap().mode {
        Mode::Normal => reply(200, "HEC is healthy", 17),
        Mode::Busy => reply(503, "HEC is unhealthy, queues are full", 18),
    }
}

async fn event(
    state: web::Data<Mutex<State>>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    state.requests += 1;
    let Some(authorization) = request.headers().get("Authorization") else {
        return reply(401, "Token is required", 2);
    };
    let Some(token) = authorization
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Splunk "))
    else {
        return reply(401, "Invalid authorization", 3);
    };
    if token != state.token {
        return reply(403, "Invalid token", 4);
    }
    if state.mode == Mode::Busy {
        return reply(503, "Server is busy", 9);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return reply(400, "No data", 5);
    }
    // Envelopes are concatenated back to back; each is validated and indexed in turn, so a
    // bad one leaves the ones before it indexed, as Splunk does.
    let stream = serde_json::Deserializer::from_slice(&body).into_iter::<Value>();
    for (number, item) in stream.enumerate() {
        let Ok(envelope) = item else {
            return invalid_event("Invalid data format", 6, number);
        };
        match envelope.get("event") {
            None => return invalid_event("Event field is required", 12, number),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return invalid_event("Event field cannot be blank", 13, number);
            }
            Some(_) => {}
        }
        if let Some(fields) = envelope.get("fields") {
            let flat = fields.as_object().is_some_and(|map| {
                map.values().all(|v| {
                    v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
                })
            });
            if !flat {
                return invalid_event("Error in handling indexed fields", 15, number);
            }
        }
        let index = envelope
            .get("index")
            .and_then(Value::as_str)
            .unwrap_or("main");
        if !state.allowed_indexes.iter().any(|i| i == index) {
            return reply(400, "Incorrect index", 7);
        }
        state.indexed.push(envelope);
    }
    reply(200, "Success", 0)
}
