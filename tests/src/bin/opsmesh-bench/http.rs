//! `http`: a load generator for the receiver (signed Splunk alerts) and for Alertmanager.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;

use crate::{Summary, arg, micros_since_epoch, num, usage};

/// Drives an HTTP endpoint with `concurrency` workers for `seconds`, optionally paced to
/// `rate` requests/s in total. Requests of the first `warmup` seconds are not counted: both
/// servers keep what they accept in bounded memory, which they fill first (page faults).
/// Each worker keeps one HTTP/1.1 keep-alive connection (hyper's connection API, no pool),
/// so the generator costs far less per request than the servers it measures.
pub async fn http(args: &[String]) {
    let url: hyper::Uri = arg(args, "--url")
        .unwrap_or_else(|| usage())
        .parse()
        .unwrap_or_else(|e| panic!("--url: {e}"));
    let kind = arg(args, "--kind").unwrap_or_else(|| usage());
    let secret = arg(args, "--secret");
    let concurrency: usize = num(args, "--concurrency", 32);
    let seconds: f64 = num(args, "--seconds", 10.0);
    let rate: f64 = num(args, "--rate", 0.0);
    let warmup: f64 = num(args, "--warmup", 0.0);
    // Part of every alert's identity: a later run against the same server (the benchmark's
    // slices) must not resend earlier alerts, which would be answered as duplicates.
    let run = micros_since_epoch();
    let started = Instant::now() + Duration::from_secs_f64(warmup);
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (url, kind, secret) = (url.clone(), kind.clone(), secret.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            let mut pace = (rate > 0.0).then(|| {
                let mut interval =
                    tokio::time::interval(Duration::from_secs_f64(concurrency as f64 / rate));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval
            });
            let mut connection = None;
            let mut n = 0u64;
            while Instant::now() < deadline {
                if let Some(interval) = pace.as_mut() {
                    interval.tick().await;
                }
                n += 1;
                let request = build_request(&url, &kind, secret.as_deref(), (run, worker, n));
                let sent = Instant::now();
                match send(&mut connection, &url, request).await {
                    Ok(status) if status.is_success() => {
                        if sent >= started {
                            latencies.push(sent.elapsed().as_micros() as u64);
                        }
                    }
                    _ if sent < started => {}
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        });
    }
    let mut all = Vec::new();
    let mut failures = 0;
    while let Some(Ok((latencies, failed))) = workers.join_next().await {
        all.extend(latencies);
        failures += failed;
    }
    let elapsed = started.elapsed();
    let label = format!(
        "http {kind} {url}, concurrency {concurrency}{}{}, failures {failures}",
        if rate > 0.0 {
            format!(", paced {rate:.0}/s")
        } else {
            String::new()
        },
        if warmup > 0.0 {
            format!(", after {warmup:.0}s warm-up")
        } else {
            String::new()
        }
    );
    Summary {
        count: all.len(),
        elapsed,
        latencies_us: all,
    }
    .print(&label, "req");
}

type Connection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Sends `request` on the worker's connection, (re)connecting first when it has none or the
/// server closed it; returns the response status once the whole body has been read.
async fn send(
    connection: &mut Option<Connection>,
    url: &hyper::Uri,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::StatusCode, Box<dyn std::error::Error>> {
    if connection.as_ref().is_none_or(|c| c.is_closed()) {
        let authority = url.authority().ok_or("--url has no host")?.as_str();
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let (sender, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(driver);
        *connection = Some(sender);
    }
    let sender = connection.as_mut().expect("connected above");
    sender.ready().await?;
    let response = sender.send_request(request).await.inspect_err(|_| {
        *connection = None;
    })?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// `(run, worker, n)` makes each alert distinct, also from other runs'.
fn build_request(
    url: &hyper::Uri,
    kind: &str,
    secret: Option<&str>,
    (run, worker, n): (u64, usize, u64),
) -> hyper::Request<Full<Bytes>> {
    let request = hyper::Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            hyper::header::HOST,
            url.authority().map_or("", |a| a.as_str()),
        )
        .header(hyper::header::CONTENT_TYPE, "application/json");
    let (request, body) = match kind {
        "splunk" => {
            // A distinct search run per request, so none is a duplicate delivery.
            let body = serde_json::to_vec(&json!({
                "sid": format!("scheduler__bench__opsmesh__r{run}w{worker}_at_{n}"),
                "search_name": "KServe model error rate above 5%",
                "app": "opsmesh", "owner": "admin",
                "results_link": "https://splunk.example.com:8000/app/opsmesh/@go?sid=bench",
                "result": {"model_name": format!("model-{}", n % 50), "namespace": "ml-team-a", "error_rate": "0.31", "restarts": "7"},
                "rows": [{"model_name": format!("model-{}", n % 50), "namespace": "ml-team-a", "error_rate": "0.31", "restarts": "7"}]
            }))
            .unwrap();
            let t = (micros_since_epoch() / 1_000_000) as i64;
            let signature =
                opsmesh_alert_receiver::sign(secret.unwrap_or_else(|| usage()), t, &body);
            (
                request.header(opsmesh_alert_receiver::SIGNATURE_HEADER, signature),
                body,
            )
        }
        "alertmanager" => (
            request,
            serde_json::to_vec(&json!([{
                "labels": {"alertname": "KServeModelErrors", "namespace": "ml-team-a",
                            "inferenceservice": format!("model-r{run}w{worker}-{n}"), "severity": "critical"},
                "annotations": {"summary": "error rate above 5% for 5m"},
                "generatorURL": "http://prometheus.example.com/graph"
            }]))
            .unwrap(),
        ),
        _ => usage(),
    };
    request
        .body(Full::new(Bytes::from(body)))
        .expect("valid request")
}
