//! A Splunk HTTP Event Collector test server speaking the real protocol (see
//! Splunk's HEC documentation): token checks with Splunk's codes and JSON bodies, gzip
//! request bodies, concatenated envelopes validated one by one with `invalid-event-number`
//! (the events before the bad one are indexed), index allow-list, request channels,
//! indexer acknowledgement (`ackId` per channel, `/services/collector/ack`, a `true` answered
//! once), health, a request size limit and switchable outages.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    net::TcpListener,
    sync::{Arc, Mutex, MutexGuard},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// `503 {"text":"Server is busy","code":9}` for every event request; health unhealthy.
    Busy,
}

/// One request to the event endpoint, as the server saw it.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub status: u16,
    pub gzip: bool,
    /// Bytes on the wire (compressed when gzip).
    pub wire_bytes: usize,
    /// Bytes of the (decompressed) body.
    pub body_bytes: usize,
    /// Envelopes in the (decompressed) body.
    pub envelopes: usize,
    pub indexed: usize,
    pub invalid_event: Option<usize>,
    pub channel: Option<String>,
}

#[derive(Default)]
struct Channel {
    next_ack: u64,
    /// ackId → polls still answered `false` (`None`: never, the batch was lost).
    pending: HashMap<u64, Option<u32>>,
}

struct Ack {
    /// Polls answered `false` before an ack turns `true`.
    pending_polls: u32,
    /// The next this many accepted batches are lost: `200` with an `ackId`, but never
    /// indexed and never acknowledged.
    lose_batches: usize,
    channels: HashMap<String, Channel>,
    answered_false: u64,
    answered_true: u64,
}

struct State {
    tokens: Vec<String>,
    allowed_indexes: Vec<String>,
    indexed: Vec<Value>,
    /// `fields.event_id` → how often it was indexed.
    counts: HashMap<String, usize>,
    requests: Vec<RequestLog>,
    mode: Mode,
    /// Events whose `fields.event_id` is listed are refused with code 6 (as Splunk refuses
    /// data it cannot parse), and `invalid-event-number`.
    reject_ids: HashSet<String>,
    /// A request holding one of these is refused whole: `400` code 6, no event number,
    /// nothing indexed.
    reject_whole_ids: HashSet<String>,
    ack: Option<Ack>,
    max_content_length: usize,
}

#[derive(Clone)]
pub struct HecServer {
    state: Arc<Mutex<State>>,
    url: String,
    handle: ServerHandle,
}

impl HecServer {
    pub const TOKEN: &'static str = "00000000-0000-4000-8000-00000000c0de";
    pub const INDEX: &'static str = "opsmesh";

    /// Starts on a free loopback port; [`HecServer::TOKEN`] may write index `opsmesh`.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            tokens: vec![Self::TOKEN.into()],
            allowed_indexes: vec![Self::INDEX.into()],
            indexed: Vec::new(),
            counts: HashMap::new(),
            requests: Vec::new(),
            mode: Mode::Normal,
            reject_ids: HashSet::new(),
            reject_whole_ids: HashSet::new(),
            ack: None,
            max_content_length: 1_000_000,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind HEC test server");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/services/collector/event", web::post().to(event))
                .route("/services/collector", web::post().to(event))
                .route("/services/collector/event/1.0", web::post().to(event))
                .route("/services/collector/ack", web::post().to(ack))
                .route("/services/collector/health", web::get().to(health))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { state, url, handle }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// The tokens accepted from now on (a rotation: both, then only the new one).
    pub fn set_tokens(&self, tokens: &[&str]) {
        self.lock().tokens = tokens.iter().map(|t| (*t).to_owned()).collect();
    }

    /// Turns indexer acknowledgement on for the token: channels become mandatory.
    pub fn enable_ack(&self, pending_polls: u32, lose_batches: usize) {
        self.lock().ack = Some(Ack {
            pending_polls,
            lose_batches,
            channels: HashMap::new(),
            answered_false: 0,
            answered_true: 0,
        });
    }

    /// Ack answers given so far: (`false`, `true`).
    pub fn ack_answers(&self) -> (u64, u64) {
        self.lock()
            .ack
            .as_ref()
            .map_or((0, 0), |a| (a.answered_false, a.answered_true))
    }

    pub fn reject_event(&self, event_id: &str) {
        self.lock().reject_ids.insert(event_id.to_owned());
    }

    pub fn reject_request_with(&self, event_id: &str) {
        self.lock().reject_whole_ids.insert(event_id.to_owned());
    }

    /// Every indexed event envelope, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().indexed.clone()
    }

    /// Indexed events from position `start` on (what arrived since an earlier call), so a
    /// watcher does not copy everything on every poll.
    pub fn events_from(&self, start: usize) -> Vec<Value> {
        self.lock()
            .indexed
            .get(start..)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    }

    /// Indexed events whose indexed field `incident_id` is `incident`, like
    /// `index=opsmesh incident_id=<id>`.
    pub fn incident(&self, incident: &str) -> Vec<Value> {
        self.lock()
            .indexed
            .iter()
            .filter(|e| e["fields"]["incident_id"] == incident)
            .cloned()
            .collect()
    }

    /// Sourcetypes of an incident's events, in arrival order.
    pub fn sourcetypes(&self, incident: &str) -> Vec<String> {
        self.incident(incident)
            .iter()
            .map(|e| e["sourcetype"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn indexed_count(&self) -> usize {
        self.lock().indexed.len()
    }

    /// How often each event id was indexed.
    pub fn counts(&self) -> HashMap<String, usize> {
        self.lock().counts.clone()
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.lock().requests.clone()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn reply(status: u16, text: &str, code: u32) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"text": text, "code": code}))
}

async fn health(state: web::Data<Mutex<State>>) -> HttpResponse {
    match state.lock().unwrap().mode {
        Mode::Normal => reply(200, "HEC is healthy", 17),
        Mode::Busy => reply(503, "HEC is unhealthy, queues are full", 18),
    }
}

/// An error answer: status, text, code.
type Refusal = (u16, &'static str, u32);

fn refuse((status, text, code): Refusal) -> HttpResponse {
    reply(status, text, code)
}

/// Token check with Splunk's codes.
fn authorize(state: &State, request: &HttpRequest) -> Result<(), Refusal> {
    let Some(authorization) = request.headers().get("Authorization") else {
        return Err((401, "Token is required", 2));
    };
    let Some(token) = authorization
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Splunk "))
    else {
        return Err((401, "Invalid authorization", 3));
    };
    if !state.tokens.iter().any(|t| t == token) {
        return Err((403, "Invalid token", 4));
    }
    Ok(())
}

/// The request channel (header or `?channel=`); mandatory with ack on, a GUID when given.
fn channel(state: &State, request: &HttpRequest) -> Result<Option<String>, Refusal> {
    let from_header = request
        .headers()
        .get("X-Splunk-Request-Channel")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = request
        .query_string()
        .split('&')
        .find_map(|kv| kv.strip_prefix("channel="))
        .map(str::to_owned);
    match from_header.or(from_query) {
        None if state.ack.is_some() => Err((400, "Data channel is missing", 10)),
        None => Ok(None),
        Some(c) if uuid::Uuid::parse_str(&c).is_err() => Err((400, "Invalid data channel", 11)),
        Some(c) => Ok(Some(c)),
    }
}

async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| (400, "Invalid data format", 6))?;
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn event(
    state: web::Data<Mutex<State>>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    // The raw payload: actix does not decompress `web::Payload`, so gzip is checked here.
    let wire = match read_body(payload).await {
        Ok(body) => body,
        Err(refusal) => return refuse(refusal),
    };
    let gzip = request
        .headers()
        .get("Content-Encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let mut state = state.lock().unwrap();
    let mut log = RequestLog {
        status: 0,
        gzip,
        wire_bytes: wire.len(),
        body_bytes: 0,
        envelopes: 0,
        indexed: 0,
        invalid_event: None,
        channel: None,
    };
    let response = handle_event(&mut state, &request, &wire, gzip, &mut log);
    log.status = response.status().as_u16();
    state.requests.push(log);
    response
}

fn handle_event(
    state: &mut State,
    request: &HttpRequest,
    wire: &[u8],
    gzip: bool,
    log: &mut RequestLog,
) -> HttpResponse {
    if let Err(refusal) = authorize(state, request) {
        return refuse(refusal);
    }
    let channel = match channel(state, request) {
        Ok(channel) => channel,
        Err(refusal) => return refuse(refusal),
    };
    log.channel = channel.clone();
    if state.mode == Mode::Busy {
        return reply(503, "Server is busy", 9);
    }
    let body = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(wire)
            .read_to_end(&mut out)
            .is_err()
        {
            return reply(400, "Invalid data format", 6);
        }
        out
    } else {
        wire.to_vec()
    };
    log.body_bytes = body.len();
    if body.len() > state.max_content_length {
        return HttpResponse::PayloadTooLarge().json(json!({
            "text": format!("Content-Length of {} too large (maximum is {})", body.len(), state.max_content_length),
            "code": 6,
        }));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return reply(400, "No data", 5);
    }
    // Envelopes are concatenated back to back; each is validated and indexed in turn, so a
    // bad one leaves the ones before it indexed, as Splunk does.
    let lost = match &mut state.ack {
        Some(ack) if ack.lose_batches > 0 => {
            ack.lose_batches -= 1;
            true
        }
        _ => false,
    };
    let mut accepted = Vec::new();
    let stream = serde_json::Deserializer::from_slice(&body).into_iter::<Value>();
    let mut failure = None;
    for (number, item) in stream.enumerate() {
        log.envelopes = number + 1;
        let Ok(envelope) = item else {
            failure = Some(("Invalid data format", 6, number));
            break;
        };
        match envelope.get("event") {
            None => {
                failure = Some(("Event field is required", 12, number));
                break;
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                failure = Some(("Event field cannot be blank", 13, number));
                break;
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
                failure = Some(("Error in handling indexed fields", 15, number));
                break;
            }
        }
        let event_id = envelope["fields"]["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if state.reject_ids.contains(&event_id) {
            failure = Some(("Invalid data format", 6, number));
            break;
        }
        let index = envelope
            .get("index")
            .and_then(Value::as_str)
            .unwrap_or("main");
        if !state.allowed_indexes.iter().any(|i| i == index) {
            index_all(state, accepted, log);
            return reply(400, "Incorrect index", 7);
        }
        accepted.push((event_id, envelope));
    }
    if failure.is_none()
        && accepted
            .iter()
            .any(|(id, _)| state.reject_whole_ids.contains(id))
    {
        return reply(400, "Invalid data format", 6);
    }
    if let Some((text, code, number)) = failure {
        index_all(state, accepted, log);
        log.invalid_event = Some(number);
        return HttpResponse::BadRequest()
            .json(json!({"text": text, "code": code, "invalid-event-number": number}));
    }
    if !lost {
        index_all(state, accepted, log);
    }
    match (&mut state.ack, channel) {
        (Some(ack), Some(channel)) => {
            let polls = ack.pending_polls;
            let channel = ack.channels.entry(channel).or_default();
            let id = channel.next_ack;
            channel.next_ack += 1;
            channel
                .pending
                .insert(id, if lost { None } else { Some(polls) });
            HttpResponse::Ok().json(json!({"text": "Success", "code": 0, "ackId": id}))
        }
        _ => reply(200, "Success", 0),
    }
}

fn index_all(state: &mut State, accepted: Vec<(String, Value)>, log: &mut RequestLog) {
    log.indexed += accepted.len();
    for (event_id, envelope) in accepted {
        *state.counts.entry(event_id).or_default() += 1;
        state.indexed.push(envelope);
    }
}

async fn ack(
    state: web::Data<Mutex<State>>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let body = match read_body(payload).await {
        Ok(body) => body,
        Err(refusal) => return refuse(refusal),
    };
    let mut state = state.lock().unwrap();
    if let Err(refusal) = authorize(&state, &request) {
        return refuse(refusal);
    }
    if state.ack.is_none() {
        return reply(400, "ACK is disabled", 14);
    }
    let channel = match channel(&state, &request) {
        Ok(Some(channel)) => channel,
        Ok(None) => return reply(400, "Data channel is missing", 10),
        Err(refusal) => return refuse(refusal),
    };
    let Some(ids) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["acks"].as_array().cloned())
    else {
        return reply(400, "Invalid data format", 6);
    };
    let ack = state.ack.as_mut().expect("checked");
    let pending = &mut ack.channels.entry(channel).or_default().pending;
    let mut answers = serde_json::Map::new();
    for id in ids.iter().filter_map(Value::as_u64) {
        let acked = match pending.get_mut(&id) {
            Some(Some(0)) => {
                // A `true` is answered once, then forgotten.
                pending.remove(&id);
                true
            }
            Some(Some(polls)) => {
                *polls -= 1;
                false
            }
            Some(None) | None => false,
        };
        if acked {
            ack.answered_true += 1;
        } else {
            ack.answered_false += 1;
        }
        answers.insert(id.to_string(), Value::Bool(acked));
    }
    HttpResponse::Ok().json(json!({ "acks": answers }))
}
