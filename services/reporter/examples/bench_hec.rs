//! Throughput of the HEC writer: a backlog of opsmesh events on the in-memory bus, drained by
//! the reporter into a local HEC server that decompresses, parses every envelope and answers
//! like Splunk (optionally with indexer acknowledgement). Run by `scripts/bench-reporter.sh`.
//!
//! `cargo run --release -p opsmesh-reporter --example bench_hec -- [EVENTS]`

use std::{
    io::Read,
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures::StreamExt;
use serde_json::{Value, json};

use opsmesh_runtime::{
    Bus, ConfigTree,
    bus::{MemoryBus, MemorySettings, Outgoing},
    launcher,
};

const EXAMPLES: [(&str, &str); 3] = [
    (
        "opsmesh.alerts.v1",
        include_str!("../../../proto/examples/opsmesh.alerts.v1.json"),
    ),
    (
        "opsmesh.diagnoses.v1",
        include_str!("../../../proto/examples/opsmesh.diagnoses.v1.json"),
    ),
    (
        "opsmesh.remediations.v1",
        include_str!("../../../proto/examples/opsmesh.remediations.v1.json"),
    ),
];

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    requests: AtomicU64,
    wire_bytes: AtomicU64,
    body_bytes: AtomicU64,
    next_ack: AtomicU64,
}

async fn event(
    counters: web::Data<Counters>,
    request: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let mut wire = Vec::new();
    while let Some(chunk) = payload.next().await {
        wire.extend_from_slice(&chunk.unwrap());
    }
    let body = if request
        .headers()
        .get("Content-Encoding")
        .is_some_and(|v| v == "gzip")
    {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(wire.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        wire.clone()
    };
    let mut events = 0;
    for item in serde_json::Deserializer::from_slice(&body).into_iter::<serde::de::IgnoredAny>() {
        if item.is_err() {
            return HttpResponse::BadRequest().json(
                json!({"text": "Invalid data format", "code": 6, "invalid-event-number": events}),
            );
        }
        events += 1;
    }
    counters.events.fetch_add(events, Ordering::Relaxed);
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters
        .wire_bytes
        .fetch_add(wire.len() as u64, Ordering::Relaxed);
    counters
        .body_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let ack_id = counters.next_ack.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().json(json!({"text": "Success", "code": 0, "ackId": ack_id}))
}

/// Every ack is `true` at once: the bench measures the poll cadence, not Splunk.
async fn ack(body: web::Bytes) -> HttpResponse {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let answers: serde_json::Map<String, Value> = request["acks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|id| (id.to_string(), Value::Bool(true)))
        .collect();
    HttpResponse::Ok().json(json!({ "acks": answers }))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"text": "HEC is healthy", "code": 17}))
}

fn start_hec(counters: Arc<Counters>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let data = web::Data::from(counters);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/services/collector/event", web::post().to(event))
            .route("/services/collector/ack", web::post().to(ack))
            .route("/services/collector/health", web::get().to(health))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    url
}

async fn backlog(bus: &MemoryBus, events: usize) -> usize {
    let mut bytes = 0;
    for n in 0..events {
        let (topic, example) = EXAMPLES[n % 3];
        let mut envelope: Value = serde_json::from_str(example).unwrap();
        let incident = format!("{:032x}", n / 3);
        envelope["id"] = Value::String(uuid::Uuid::now_v7().to_string());
        envelope["incident_id"] = Value::String(incident.clone());
        let payload = serde_json::to_vec(&envelope).unwrap();
        bytes += payload.len();
        bus.publish(Outgoing {
            topic: topic.into(),
            key: incident,
            payload,
            headers: vec![],
        })
        .await
        .unwrap();
    }
    bytes
}

/// Drains `events` through a fresh reporter configured with `extra`; events per second.
async fn run(name: &str, events: usize, extra: &[(&str, &str)]) {
    let counters = Arc::new(Counters::default());
    let url = start_hec(counters.clone());
    let bus = MemoryBus::new(&MemorySettings {
        partitions: 6,
        retention_messages: events,
    });
    let bytes = backlog(&bus, events).await;
    let mut env: Vec<(String, String)> = vec![
        ("OPSMESH__BUS__KIND".into(), "memory".into()),
        ("OPSMESH__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("OPSMESH__HTTP__ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("OPSMESH__HTTP__WORKERS".into(), "1".into()),
        ("OPSMESH__REPORTER__HEC__URL".into(), url),
        (
            "OPSMESH__REPORTER__HEC__TOKEN".into(),
            "00000000-0000-4000-8000-00000000c0de".into(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let tree = ConfigTree::load_with_env(None, env).unwrap();
    let settings = tree.settings().unwrap();
    let app = launcher::build(
        &tree,
        settings,
        &[&opsmesh_reporter::SERVICE],
        Some(Arc::new(bus.clone()) as Arc<dyn Bus>),
    )
    .await
    .unwrap();
    let stop = app.shutdown_token();
    let started = Instant::now();
    let running = tokio::spawn(app.run_until_stopped());
    let limit = Duration::from_secs(600);
    while counters.events.load(Ordering::Relaxed) < events as u64 {
        assert!(
            started.elapsed() < limit,
            "{name}: not drained in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    while bus.lag("opsmesh-reporter") > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let committed = started.elapsed();
    stop.cancel();
    running.await.unwrap().unwrap();
    let requests = counters.requests.load(Ordering::Relaxed);
    let wire = counters.wire_bytes.load(Ordering::Relaxed) as f64;
    let body = counters.body_bytes.load(Ordering::Relaxed) as f64;
    println!(
        "{name:<44} {events:>7} events {:>8.0} ev/s received {:>8.0} ev/s committed {:>6.1} MB/s {:>6} requests {:>5.1}x gzip",
        events as f64 / elapsed.as_secs_f64(),
        events as f64 / committed.as_secs_f64(),
        bytes as f64 / 1e6 / committed.as_secs_f64(),
        requests,
        if wire > 0.0 { body / wire } else { 0.0 },
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60_000);
    println!(
        "reporter → local HEC test server, in-memory bus, {} CPUs, opsmesh envelopes of 0.8–1.8 KB",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    run("defaults (500/batch, gzip, 4 in flight)", events, &[]).await;
    run(
        "no gzip",
        events,
        &[("OPSMESH__REPORTER__HEC__GZIP", "false")],
    )
    .await;
    run(
        "1 in flight",
        events,
        &[("OPSMESH__REPORTER__HEC__MAX_IN_FLIGHT", "1")],
    )
    .await;
    run(
        "indexer ack, defaults (poll every 2s)",
        events.min(20_000),
        &[("OPSMESH__REPORTER__HEC__ACK__ENABLED", "true")],
    )
    .await;
    run(
        "indexer ack, poll 200ms, 16 in flight",
        events,
        &[
            ("OPSMESH__REPORTER__HEC__ACK__ENABLED", "true"),
            ("OPSMESH__REPORTER__HEC__ACK__POLL_INTERVAL", "200ms"),
            ("OPSMESH__REPORTER__HEC__MAX_IN_FLIGHT", "16"),
        ],
    )
    .await;
    run(
        "one event per request (the previous writer)",
        events.min(10_000),
        &[
            ("OPSMESH__REPORTER__HEC__MAX_BATCH_EVENTS", "1"),
            ("OPSMESH__REPORTER__HEC__MAX_IN_FLIGHT", "1"),
            ("OPSMESH__REPORTER__HEC__GZIP", "false"),
        ],
    )
    .await;
}
