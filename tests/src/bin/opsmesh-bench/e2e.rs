//! `e2e`: alerts at a fixed rate through the whole mesh, from `202` to their events in HEC.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{Summary, mesh::Mesh, num};

/// The whole mesh in this process (Kafka or in-memory bus) reporting to a HEC test server:
/// latency from the receiver's `202` to the incident's events being accepted by HEC.
pub async fn e2e(args: &[String]) {
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
