//! Benchmarks, printed rather than asserted (scripts/bench.sh drives them):
//!
//! - `bus`: publish→consume throughput and latency of the Kafka bus (a real broker) or the
//!   in-memory bus, with 1 KiB messages;
//! - `http`: a load generator for the receiver (signed Splunk alerts) and for Prometheus
//!   Alertmanager (`POST /api/v2/alerts`, one alert per request), printing requests/s and
//!   latency percentiles;
//! - `e2e`: alerts at a fixed rate through the whole mesh, 202 -> their events in HEC;
//! - `incidents`: distinct incidents as fast as senders can post them, 202 -> the incident's
//!   terminal ledger record indexed by HEC: incidents per second and latency percentiles.
//! - `chaos`: the chaos suite's harness (five processes on tansu with SQLite, the cluster
//!   simulator, HEC), larger: alerts accepted, lost, duplicated, models changed, time to settle.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;

use opsmesh_runtime::{
    Bus,
    bus::{KafkaBus, KafkaSettings, MemoryBus, MemorySettings, Outgoing},
};

fn usage() -> ! {
    eprintln!(
        "usage:\n  opsmesh-bench bus (--kafka BROKERS | --memory) [--messages N] [--size BYTES] [--in-flight N]\n  \
         opsmesh-bench http --url URL --kind splunk|alertmanager [--secret S] [--concurrency C] [--seconds S] [--warmup S] [--rate R]\n  \
         opsmesh-bench e2e (--kafka BROKERS | --memory) [--alerts N] [--rate R] [--hec-linger DURATION]\n  \
         opsmesh-bench incidents (--kafka BROKERS | --memory) [--alerts N] [--concurrency C] [--hec-linger DURATION]\n  \
         opsmesh-bench chaos [--alerts N] [--models M] [--senders C] [--storm SECONDS] [--hec-outage SECONDS] [--seed S] [--no-faults]"
    );
    std::process::exit(2)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    arg(args, name)
        .map(|v| v.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The HTTP load generator runs on one thread: pinned to one core, a multi-thread
    // runtime would only add cross-thread wake-ups to the cost of every request.
    let mut runtime = match args.first().map(String::as_str) {
        Some("http") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        match args.first().map(String::as_str) {
            Some("bus") => bus(&args).await,
            Some("http") => http(&args).await,
            Some("e2e") => e2e(&args).await,
            Some("incidents") => incidents(&args).await,
            Some("chaos") => chaos(&args).await,
            _ => usage(),
        }
    });
}

fn micros_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Summary {
    count: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Summary {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }

    fn print(&mut self, label: &str, unit: &str) {
        self.latencies_us.sort_unstable();
        println!(
            "{label}: {} {unit} in {:.2}s = {:.0} {unit}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.count,
            self.elapsed.as_secs_f64(),
            self.count as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(1.0),
        );
    }
}

/// Publishes `messages` messages of `size` bytes with up to `in_flight` unacknowledged, while
/// a consumer group member reads them; latency is publish start → consumer receipt.
async fn bus(args: &[String]) {
    let messages: usize = num(args, "--messages", 20_000);
    let size: usize = num(args, "--size", 1024);
    let in_flight: usize = num(args, "--in-flight", 256);
    let (bus, label): (Arc<dyn Bus>, String) = if let Some(brokers) = arg(args, "--kafka") {
        let mut settings = KafkaSettings {
            brokers,
            partitions: 6,
            ..KafkaSettings::default()
        };
        // `--client key=value`: librdkafka properties to compare settings.
        for pair in args
            .windows(2)
            .filter(|w| w[0] == "--client")
            .map(|w| &w[1])
        {
            if let Some((k, v)) = pair.split_once('=') {
                settings.client.insert(k.to_owned(), v.to_owned());
            }
        }
        (
            Arc::new(KafkaBus::new(&settings, "opsmesh-bench").unwrap()),
            "kafka (tansu)".into(),
        )
    } else if args.iter().any(|a| a == "--memory") {
        (
            Arc::new(MemoryBus::new(&MemorySettings {
                partitions: 6,
                retention_messages: messages + 1,
            })),
            "in-memory".into(),
        )
    } else {
        usage()
    };
    let topic = format!("opsmesh.bench.{}", uuid::Uuid::now_v7().simple());
    bus.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("topic created");
    let mut subscription = bus
        .subscribe(&format!("{topic}-group"), &[&topic])
        .await
        .unwrap();
    // Warm-up: wait for the group to own the partitions.
    bus.publish(Outgoing {
        topic: topic.clone().into(),
        key: "warmup".into(),
        payload: vec![0; 8],
        headers: vec![],
    })
    .await
    .unwrap();
    subscription.recv().await.unwrap();

    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(messages);
        while latencies.len() < messages {
            let message = subscription.recv().await.unwrap();
            let sent = u64::from_le_bytes(message.payload[..8].try_into().unwrap());
            latencies.push(micros_since_epoch().saturating_sub(sent));
        }
        (latencies, Instant::now())
    });
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..messages {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let bus = bus.clone();
        let topic = topic.clone();
        tasks.spawn(async move {
            let mut payload = vec![b'x'; size.max(8)];
            payload[..8].copy_from_slice(&micros_since_epoch().to_le_bytes());
            bus.publish(Outgoing {
                topic: topic.into(),
                key: format!("key-{}", n % 64),
                payload,
                headers: vec![],
            })
            .await
            .expect("acknowledged");
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let (latencies, finished) = consumer.await.unwrap();
    Summary {
        count: messages,
        elapsed: finished - started,
        latencies_us: latencies,
    }
    .print(
        &format!("bus {label}, {size} B messages, {in_flight} in flight"),
        "msgs",
    );
}

/// Drives an HTTP endpoint with `concurrency` workers for `seconds`, optionally paced to
/// `rate` requests/s in total. Requests of the first `warmup` seconds are not counted: both
/// servers keep what they accept in bounded memory, which they fill first (page faults).
/// Each worker keeps one HTTP/1.1 keep-alive connection (hyper's connection API, no pool),
/// so the generator costs far less per request than the servers it measures.
async fn http(args: &[String]) {
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

/// The whole mesh in this process (Kafka or in-memory bus) reporting to a HEC test server:
/// latency from the receiver's `202` to the incident's events being accepted by HEC.
/// The whole mesh in this process (every service, the chosen bus) writing to a HEC test
/// server, with alerts signed by the secret `bench`.
struct Mesh {
    base: String,
    hec: opsmesh_tests::hec::HecServer,
    label: String,
    /// Set when `reporter.hec.linger` was configured (else the 200 ms default applies).
    linger: bool,
    stop: tokio_util::sync::CancellationToken,
    running: tokio::task::JoinHandle<Result<(), opsmesh_runtime::app::StopError>>,
    _dir: tempfile::TempDir,
}

impl Mesh {
    async fn start(args: &[String], extra: &[(&str, String)]) -> Self {
        use opsmesh_tests::hec::HecServer;
        let hec = HecServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secret");
        std::fs::write(&secrets, "bench").unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("OPSMESH__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("OPSMESH__HTTP__ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
            ("OPSMESH__LOG__LEVEL".into(), "warn".into()),
            (
                "OPSMESH__RECEIVER__SOURCES__BENCH__SECRETS_FILE".into(),
                secrets.display().to_string(),
            ),
            // The benchmark measures throughput: its one source is not rate-limited.
            (
                "OPSMESH__RECEIVER__SOURCES__BENCH__RATE_LIMIT_PER_SECOND".into(),
                "0".into(),
            ),
            ("OPSMESH__REPORTER__HEC__URL".into(), hec.url().to_owned()),
            (
                "OPSMESH__REPORTER__HEC__TOKEN".into(),
                HecServer::TOKEN.into(),
            ),
            ("OPSMESH__DIAGNOSER__TELEMETRY_WAIT".into(), "0s".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        if let Some(linger) = arg(args, "--hec-linger") {
            env.push(("OPSMESH__REPORTER__HEC__LINGER".into(), linger));
        }
        // Any setting can be tuned for a run, e.g. OPSMESH__BUS__KAFKA__FETCH_WAIT_MAX=10ms.
        env.extend(std::env::vars().filter(|(k, _)| k.starts_with("OPSMESH__")));
        let memory = match arg(args, "--kafka") {
            Some(brokers) => {
                env.push(("OPSMESH__BUS__KAFKA__BROKERS".into(), brokers));
                false
            }
            None if args.iter().any(|a| a == "--memory") => {
                env.push(("OPSMESH__BUS__KIND".into(), "memory".into()));
                true
            }
            None => usage(),
        };
        let tree = opsmesh_runtime::ConfigTree::load_with_env(None, env).expect("configuration");
        let settings = tree.settings().expect("settings");
        let (bus, label): (Option<Arc<dyn Bus>>, String) = if memory {
            (
                Some(Arc::new(MemoryBus::new(&settings.bus.memory))),
                "in-memory".into(),
            )
        } else {
            (None, "kafka (tansu)".into())
        };
        let linger = tree.contains("reporter.hec.linger");
        let app = opsmesh_runtime::launcher::build(&tree, settings, opsmesh::SERVICES, bus)
            .await
            .expect("mesh builds");
        let base = format!("http://{}", app.local_addr());
        let admin = format!("http://{}", app.admin_addr());
        let stop = app.shutdown_token();
        let running = tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::new();
        while client
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let every consumer join before timing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Mesh {
            base,
            hec,
            label,
            linger,
            stop,
            running,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.running.await;
    }

    async fn post_alert(&self, client: &reqwest::Client, body: Vec<u8>) -> serde_json::Value {
        let t = (micros_since_epoch() / 1_000_000) as i64;
        let response = client
            .post(format!("{}/v1/alerts/splunk", self.base))
            .header("Content-Type", "application/json")
            .header(
                opsmesh_alert_receiver::SIGNATURE_HEADER,
                opsmesh_alert_receiver::sign("bench", t, &body),
            )
            .body(body)
            .send()
            .await
            .expect("receiver answers");
        response.json().await.expect("a JSON reply")
    }
}

async fn e2e(args: &[String]) {
    let alerts: usize = num(args, "--alerts", 200);
    let rate: f64 = num(args, "--rate", 20.0);
    let mesh = Mesh::start(args, &[]).await;
    let Mesh {
        ref hec,
        ref label,
        linger,
        ..
    } = mesh;
    let client = reqwest::Client::new();

    // The watcher polls HEC while alerts are being sent, so each incident is timed from its
    // own 202.
    type Seen = Vec<(String, Instant, Option<u64>, Option<u64>)>;
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (seen, done, hec) = (seen.clone(), done.clone(), hec.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let events = hec.events();
                let now = Instant::now();
                let finished = {
                    let mut table = seen.lock().unwrap();
                    for (incident, at, alert_at, all_at) in
                        table.iter_mut().filter(|r| r.3.is_none())
                    {
                        let kinds: Vec<&str> = events
                            .iter()
                            .filter(|e| e["fields"]["incident_id"] == incident.as_str())
                            .filter_map(|e| e["sourcetype"].as_str())
                            .collect();
                        let micros = now.duration_since(*at).as_micros() as u64;
                        if alert_at.is_none() && kinds.contains(&"opsmesh:alert") {
                            *alert_at = Some(micros);
                        }
                        if ["opsmesh:alert", "opsmesh:diagnosis", "opsmesh:remediation"]
                            .iter()
                            .all(|k| kinds.contains(k))
                        {
                            *all_at = Some(micros);
                        }
                    }
                    done.load(std::sync::atomic::Ordering::SeqCst)
                        && table.iter().all(|r| r.3.is_some())
                };
                if finished || started.elapsed() > Duration::from_secs(180) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for n in 0..alerts {
        pace.tick().await;
        let body = serde_json::to_vec(&json!({
            "sid": format!("scheduler__bench__e2e_at_{n}"),
            "search_name": "KServe model error rate above 5%",
            "result": {"model_name": format!("e2e-model-{n}"), "namespace": "ml-team-a", "error_rate": "0.31"},
            "rows": [{"model_name": format!("e2e-model-{n}"), "namespace": "ml-team-a", "error_rate": "0.31"}]
        }))
        .unwrap();
        let reply = mesh.post_alert(&client, body).await;
        let accepted = Instant::now();
        seen.lock().unwrap().push((
            reply["incident_key"].as_str().unwrap().to_owned(),
            accepted,
            None,
            None,
        ));
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let _ = watcher.await;
    let table = std::mem::take(&mut *seen.lock().unwrap());
    let alert_seen: Vec<Option<u64>> = table.iter().map(|r| r.2).collect();
    let all_seen: Vec<Option<u64>> = table.iter().map(|r| r.3).collect();
    let elapsed = started.elapsed();
    let note = if linger {
        ""
    } else {
        " (reporter.hec.linger default 200ms)"
    };
    for (what, seen) in [
        ("alert event in HEC", alert_seen),
        ("alert+diagnosis+decision in HEC", all_seen),
    ] {
        let missing = seen.iter().filter(|s| s.is_none()).count();
        let mut summary = Summary {
            count: seen.len() - missing,
            elapsed,
            latencies_us: seen.into_iter().flatten().collect(),
        };
        summary.latencies_us.sort_unstable();
        println!(
            "e2e {label}, {alerts} alerts at {rate}/s, 202 -> {what}{note}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, missing {missing}",
            summary.percentile(0.50),
            summary.percentile(0.99),
            summary.percentile(1.0),
        );
    }
    mesh.stop().await;
}

/// Ledger states that end an incident, as the reporter indexes them (`outcome`).
const TERMINAL_OUTCOMES: &[&str] = &[
    "resolved",
    "escalated",
    "refused",
    "advised",
    "dry_run",
    "no_action",
];

/// Distinct incidents through the whole mesh: `--concurrency` senders post `--alerts`
/// alerts, each about a model of its own, as fast as the receiver answers; an incident is
/// done when HEC indexed its terminal ledger record. Prints incidents per second (first 202
/// to last terminal record) and the 202 -> terminal-record latency.
async fn incidents(args: &[String]) {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let alerts: usize = num(args, "--alerts", 5000);
    let concurrency: usize = num(args, "--concurrency", 32);
    // HEC batching waits 200 ms by default; this measures the mesh, not the batch window.
    let linger = arg(args, "--hec-linger").unwrap_or_else(|| "10ms".into());
    let mut extra = vec![("OPSMESH__BUS__MEMORY__RETENTION_MESSAGES", "1000000".into())];
    if arg(args, "--hec-linger").is_none() {
        extra.push(("OPSMESH__REPORTER__HEC__LINGER", linger.clone()));
    }
    let mesh = Arc::new(Mesh::start(args, &extra).await);
    let run = micros_since_epoch();
    let accepted: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mesh, accepted, next) = (mesh.clone(), accepted.clone(), next.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= alerts {
                        return;
                    }
                    let model = format!("inc-{run}-{n}");
                    let body = serde_json::to_vec(&json!({
                        "sid": format!("scheduler__bench__incidents_at_{n}"),
                        "search_name": "KServe model error rate above 5%",
                        "result": {"model_name": model, "namespace": "ml-team-a", "error_rate": "0.31"},
                        "rows": [{"model_name": model, "namespace": "ml-team-a", "error_rate": "0.31"}]
                    }))
                    .unwrap();
                    let reply = mesh.post_alert(&client, body).await;
                    let at = Instant::now();
                    let key = reply["incident_key"].as_str().expect("incident_key").to_owned();
                    accepted.lock().unwrap().insert(key, at);
                }
            })
        })
        .collect();
    let mut done: HashMap<String, Instant> = HashMap::new();
    let mut cursor = 0;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.len() < alerts && Instant::now() < deadline {
        let events = mesh.hec.events_from(cursor);
        cursor += events.len();
        let now = Instant::now();
        for event in events {
            let fields = &event["fields"];
            let outcome = fields["outcome"].as_str().unwrap_or_default();
            if event["sourcetype"] == "opsmesh:remediation" && TERMINAL_OUTCOMES.contains(&outcome)
            {
                let incident = fields["incident_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if done.insert(incident, now).is_none() {
                    *outcomes.entry(outcome.to_owned()).or_default() += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let last_done = done.values().max().copied().unwrap_or_else(Instant::now);
    for sender in senders {
        let _ = sender.await;
    }
    let accepted = std::mem::take(&mut *accepted.lock().unwrap());
    let mut latencies_us: Vec<u64> = accepted
        .iter()
        .filter_map(|(incident, at)| {
            done.get(incident)
                .map(|d| d.saturating_duration_since(*at).as_micros() as u64)
        })
        .collect();
    latencies_us.sort_unstable();
    let elapsed = last_done.duration_since(started);
    let summary = Summary {
        count: latencies_us.len(),
        elapsed,
        latencies_us,
    };
    println!(
        "incidents {}, {alerts} distinct alerts from {concurrency} senders, reporter.hec.linger {linger}: \
         {} terminal in {:.2}s = {:.0} incidents/s; 202 -> terminal record in HEC p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; outcomes {outcomes:?}; missing {}",
        mesh.label,
        summary.count,
        elapsed.as_secs_f64(),
        summary.count as f64 / elapsed.as_secs_f64(),
        summary.percentile(0.50),
        summary.percentile(0.99),
        summary.percentile(1.0),
        alerts - done.len(),
    );
    match Arc::try_unwrap(mesh) {
        Ok(mesh) => mesh.stop().await,
        Err(_) => unreachable!("every sender finished"),
    }
}

/// The chaos suite's harness at benchmark size (tansu starts itself; `OPSMESH_TANSU` names
/// the binary). Prints the run's timeline and counts.
async fn chaos(args: &[String]) {
    use opsmesh_tests::chaos::{Plan, run};
    let plan = Plan {
        seed: arg(args, "--seed")
            .map(|s| s.parse().unwrap_or_else(|_| usage()))
            .unwrap_or_else(Plan::seed_from_env),
        alerts: num(args, "--alerts", 10_000),
        models: num(args, "--models", 100),
        senders: num(args, "--senders", 32),
        storm: Duration::from_secs(num(args, "--storm", 120)),
        faults: !args.iter().any(|a| a == "--no-faults"),
        hec_outage: Duration::from_secs(num(args, "--hec-outage", 60)),
        settle: Duration::from_secs(600),
    };
    let outcome = run(&plan).await;
    outcome.print();
    let accepted = outcome.accepted.len() as f64;
    if let Some(settled) = outcome.settled_after {
        println!(
            "{} alerts accepted over {:.1}s ({:.0}/s); all in HEC and every incident decided {:.1}s after the first",
            outcome.accepted.len(),
            outcome.storm_took.as_secs_f64(),
            accepted / outcome.storm_took.as_secs_f64(),
            settled.as_secs_f64()
        );
    }
    println!(
        "lost {}, duplicate alert events {}, models not changed exactly once {}, undecided incidents {}, audit {}",
        outcome.lost.len(),
        outcome.duplicate_alert_events,
        outcome.not_changed_once().len(),
        outcome.undecided().len(),
        if outcome.audit_ok { "OK" } else { "FAILED" }
    );
}
