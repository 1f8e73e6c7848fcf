//! `incidents`: distinct incidents as fast as senders post them, from `202` to the
//! incident's terminal ledger record indexed by HEC.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{Summary, arg, mesh::Mesh, micros_since_epoch, num};

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
pub async fn incidents(args: &[String]) {
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
