//! Benchmarks, printed rather than asserted (scripts/bench.sh drives them):
//!
//! - `bus`: publish→consume throughput and latency of the Kafka bus (a real broker) or the
//!   in-memory bus, with 1 KiB messages;
//! - `http`: a load generator for the receiver (signed Splunk alerts) and for Prometheus
//!   Alertmanager (`POST /api/v2/alerts`, one alert per request), printing requests/s and
//!   latency percentiles.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::json;

use opsmesh_runtime::{
    Bus,
    bus::{KafkaBus, KafkaSettings, MemoryBus, MemorySettings, Outgoing},
};

fn usage() -> ! {
    eprintln!(
        "usage:\n  opsmesh-bench bus (--kafka BROKERS | --memory) [--messages N] [--size BYTES] [--in-flight N]\n  \
         opsmesh-bench http --url URL --kind splunk|alertmanager [--secret S] [--concurrency C] [--seconds S] [--rate R]"
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bus") => bus(&args).await,
        Some("http") => http(&args).await,
        _ => usage(),
    }
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
        let settings = KafkaSettings {
            brokers,
            partitions: 6,
            ..KafkaSettings::default()
        };
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
        topic: topic.clone(),
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
                topic,
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
/// `rate` requests/s in total.
async fn http(args: &[String]) {
    let url = arg(args, "--url").unwrap_or_else(|| usage());
    let kind = arg(args, "--kind").unwrap_or_else(|| usage());
    let secret = arg(args, "--secret");
    let concurrency: usize = num(args, "--concurrency", 32);
    let seconds: f64 = num(args, "--seconds", 10.0);
    let rate: f64 = num(args, "--rate", 0.0);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (client, url, kind, secret) =
            (client.clone(), url.clone(), kind.clone(), secret.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            let mut pace = (rate > 0.0).then(|| {
                let mut interval =
                    tokio::time::interval(Duration::from_secs_f64(concurrency as f64 / rate));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval
            });
            let mut n = 0u64;
            while Instant::now() < deadline {
                if let Some(interval) = pace.as_mut() {
                    interval.tick().await;
                }
                n += 1;
                let request = build_request(&client, &url, &kind, secret.as_deref(), worker, n);
                let sent = Instant::now();
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
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
        "http {kind} {url}, concurrency {concurrency}{}, failures {failures}",
        if rate > 0.0 {
            format!(", paced {rate:.0}/s")
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

fn build_request(
    client: &reqwest::Client,
    url: &str,
    kind: &str,
    secret: Option<&str>,
    worker: usize,
    n: u64,
) -> reqwest::RequestBuilder {
    match kind {
        "splunk" => {
            // A distinct search run per request, so none is a duplicate delivery.
            let body = serde_json::to_vec(&json!({
                "sid": format!("scheduler__bench__opsmesh__w{worker}_at_{n}"),
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
            client
                .post(url)
                .header("Content-Type", "application/json")
                .header(opsmesh_alert_receiver::SIGNATURE_HEADER, signature)
                .body(body)
        }
        "alertmanager" => client.post(url).json(&json!([{
            "labels": {"alertname": "KServeModelErrors", "namespace": "ml-team-a",
                        "inferenceservice": format!("model-w{worker}-{n}"), "severity": "critical"},
            "annotations": {"summary": "error rate above 5% for 5m"},
            "generatorURL": "http://prometheus.example.com/graph"
        }])),
        _ => usage(),
    }
}
