//! One alert, one trace: the five services run as processes on the broker and export their
//! spans over OTLP/HTTP to a receiver written here; the trace the caller started holds the
//! receiver's, diagnoser's, remediator's and reporter's spans, each consumer span a child of
//! the span that published its message in the upstream service.

use std::{
    collections::{BTreeSet, HashMap},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value,
    trace::v1::span::SpanKind,
};
use prost::Message;
use serde_json::Value;

use opsmesh_testkit::splunk_export::SplunkExport;
use opsmesh_tests::{
    broker::Broker,
    eventually,
    hec::HecServer,
    mesh::{Mesh, incident_complete, signed_post, webhook_alert},
};

const LIMIT: Duration = Duration::from_secs(60);
const SPLUNK_TOKEN: &str = "splunk-search-token";

/// One exported span, as the test needs it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP trace receiver: `POST /v1/traces` with an `ExportTraceServiceRequest` in
/// protobuf, answered with an empty `ExportTraceServiceResponse`.
#[derive(Clone, Default)]
struct OtlpReceiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

impl OtlpReceiver {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("address");
        let receiver = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let receiver = receiver.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let receiver = receiver.clone();
                        async move { Ok::<_, Infallible>(receiver.answer(request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<hyper::body::Bytes>> {
        let reply = |status: u16, body: Vec<u8>| {
            Response::builder()
                .status(status)
                .header("content-type", "application/x-protobuf")
                .body(Full::new(body.into()))
                .expect("response")
        };
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if request.uri().path() != "/v1/traces" || content_type != "application/x-protobuf" {
            return reply(404, Vec::new());
        }
        let Ok(body) = request.into_body().collect().await else {
            return reply(400, Vec::new());
        };
        let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
            return reply(400, Vec::new());
        };
        self.spans.lock().unwrap().extend(spans_of(export));
        reply(200, ExportTraceServiceResponse::default().encode_to_vec())
    }

    fn trace(&self, trace_id: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn spans_of(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                any_value::Value::StringValue(name) => name.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Span {
                service: service.clone(),
                kind: span.kind(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
            });
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (consuming service, topic) → the service whose span must be its parent.
const HOPS: &[(&str, &str, &str)] = &[
    ("diagnoser", "opsmesh.alerts.v1", "alert-receiver"),
    ("remediator", "opsmesh.diagnoses.v1", "diagnoser"),
    ("reporter", "opsmesh.alerts.v1", "alert-receiver"),
    ("reporter", "opsmesh.diagnoses.v1", "diagnoser"),
    ("reporter", "opsmesh.remediations.v1", "remediator"),
];

/// What is still missing from the trace; empty when every hop is there and linked.
fn missing_links(spans: &[Span], caller_span: &str) -> Vec<String> {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut missing = Vec::new();
    let door = spans
        .iter()
        .find(|s| s.service == "opsmesh-alert-receiver" && s.kind == SpanKind::Server);
    match door {
        Some(door) if door.parent_span_id == caller_span => {}
        Some(door) => missing.push(format!(
            "the alert door's span {door:?} is not a child of the caller's span {caller_span}"
        )),
        None => missing.push("no server span of the alert receiver".into()),
    }
    for (consumer, topic, upstream) in HOPS {
        let name = format!("{topic} process");
        let consumed: Vec<&Span> = spans
            .iter()
            .filter(|s| {
                s.service == format!("opsmesh-{consumer}")
                    && s.kind == SpanKind::Consumer
                    && s.name == name
            })
            .collect();
        if consumed.is_empty() {
            missing.push(format!("no {consumer} span consuming {topic}"));
        }
        for span in consumed {
            match by_id.get(span.parent_span_id.as_str()) {
                Some(parent)
                    if parent.service == format!("opsmesh-{upstream}")
                        && matches!(parent.kind, SpanKind::Producer | SpanKind::Server) => {}
                Some(parent) => missing.push(format!(
                    "{consumer} consuming {topic}: parent {parent:?} is not {upstream}'s publishing span"
                )),
                None => missing.push(format!(
                    "{consumer} consuming {topic}: parent {} not (yet) in the trace",
                    span.parent_span_id
                )),
            }
        }
    }
    // One trace: every span hangs, through its parents, off the caller's span.
    for span in spans {
        let mut at = span;
        let mut hops = 0;
        while at.parent_span_id != caller_span {
            match by_id.get(at.parent_span_id.as_str()) {
                Some(parent) if hops < spans.len() => {
                    at = parent;
                    hops += 1;
                }
                _ => {
                    missing.push(format!("{span:?} does not lead to the caller's span"));
                    break;
                }
            }
        }
    }
    missing
}

/// The mesh exporting to `otlp` every `scheduled_delay`, and the Splunk its diagnoser searches.
async fn traced_mesh(
    broker: &Broker,
    hec: &HecServer,
    otlp: &OtlpReceiver,
    scheduled_delay: &str,
) -> (Mesh, SplunkExport) {
    let endpoint = format!("http://{}", otlp.start().await);
    let mut extra = Vec::new();
    for (service, _) in opsmesh_tests::mesh::SERVICES {
        extra.push((
            *service,
            "OPSMESH__TELEMETRY__OTLP__ENDPOINT",
            endpoint.as_str(),
        ));
        extra.push((
            *service,
            "OPSMESH__TELEMETRY__OTLP__SCHEDULED_DELAY",
            scheduled_delay,
        ));
    }
    // The alert's target has no telemetry: the diagnoser need not wait for it.
    extra.push(("diagnoser", "OPSMESH__DIAGNOSER__TELEMETRY_WAIT", "0s"));
    // Its evidence searches go to a Splunk that finds nothing: each is a client span.
    let splunk = SplunkExport::start(SPLUNK_TOKEN, Vec::new()).await;
    extra.push(("diagnoser", "OPSMESH__DIAGNOSER__SPLUNK__URL", splunk.url()));
    extra.push((
        "diagnoser",
        "OPSMESH__DIAGNOSER__SPLUNK__TOKEN",
        SPLUNK_TOKEN,
    ));
    (Mesh::start(broker, hec, &extra).await, splunk)
}

/// A caller's trace context: `(trace id, span id)`.
fn caller_context() -> (String, String) {
    (
        format!("{:032x}", rand::random::<u128>()),
        format!("{:016x}", rand::random::<u64>() | 1),
    )
}

/// Sends one alert as part of the caller's trace; returns its incident once HEC holds the
/// alert, the diagnosis and the decision.
async fn traced_alert(
    mesh: &Mesh,
    hec: &HecServer,
    (trace_id, span_id): &(String, String),
) -> String {
    let url = mesh.services["alert-receiver"].url("/v1/alerts/splunk");
    let response = signed_post(
        &reqwest::Client::new(),
        &url,
        &webhook_alert("traced-model"),
    )
    .header("traceparent", format!("00-{trace_id}-{span_id}-01"))
    .send()
    .await
    .expect("the receiver answers");
    assert_eq!(response.status(), 202);
    let reply: Value = response.json().await.expect("JSON reply");
    let incident = reply["incident_key"]
        .as_str()
        .expect("incident key")
        .to_owned();
    eventually("alert, diagnosis and decision in HEC", LIMIT, || async {
        incident_complete(hec, &incident).then_some(())
    })
    .await;
    incident
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_alert_is_one_trace_across_the_services() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    let otlp = OtlpReceiver::default();
    // Spans leave within a fifth of a second instead of the default 5 s.
    let (mesh, splunk) = traced_mesh(&broker, &hec, &otlp, "200ms").await;
    let caller = caller_context();
    let (trace_id, caller_span) = &caller;
    let incident = traced_alert(&mesh, &hec, &caller).await;

    // Polled by hand rather than with `eventually`: a failure names what is missing.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let spans = loop {
        let spans = otlp.trace(trace_id);
        let missing = missing_links(&spans, caller_span);
        if missing.is_empty() {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing:#?}\nspans: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for service in ["alert-receiver", "diagnoser", "remediator", "reporter"] {
        assert!(
            services.contains(format!("opsmesh-{service}").as_str()),
            "{services:?}"
        );
    }
    assert!(
        spans.iter().any(|s| s.name == "ledger.record"),
        "a span per ledger step: {spans:#?}"
    );
    let searches = spans
        .iter()
        .filter(|s| {
            s.service == "opsmesh-diagnoser"
                && s.name == "splunk.search"
                && s.kind == SpanKind::Client
        })
        .count();
    assert!(searches > 0, "a client span per Splunk search: {spans:#?}");
    assert_eq!(searches, splunk.searches().len(), "{spans:#?}");

    // Splunk and the trace viewer meet on the same id.
    let events = hec.incident(&incident);
    assert!(!events.is_empty());
    for event in &events {
        assert_eq!(event["fields"]["trace_id"], *trace_id, "{event}");
    }
    // And so do the logs (JSON lines in test meshes): the remediator's ledger lines carry it.
    let log = mesh.services["remediator"].log_text();
    let ledger_lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "ledger record")
        .collect();
    assert!(!ledger_lines.is_empty(), "{log}");
    for line in &ledger_lines {
        assert_eq!(line["trace_id"], *trace_id, "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_sends_the_spans_still_queued() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    let otlp = OtlpReceiver::default();
    // Nothing leaves on schedule: what arrives was sent by the stop.
    let (mut mesh, _splunk) = traced_mesh(&broker, &hec, &otlp, "1h").await;
    let caller = caller_context();
    let (trace_id, caller_span) = &caller;
    traced_alert(&mesh, &hec, &caller).await;
    assert!(otlp.trace(trace_id).is_empty(), "exported before the stop");

    for service in mesh.services.values() {
        service.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for (name, service) in mesh.services.iter_mut() {
        let status = service
            .wait_exit(LIMIT)
            .unwrap_or_else(|| panic!("{name} did not stop"));
        assert!(status.success(), "{name}: {status}\n{}", service.log_text());
    }
    let spans = otlp.trace(trace_id);
    let missing = missing_links(&spans, caller_span);
    assert!(missing.is_empty(), "{missing:#?}\nspans: {spans:#?}");
}
