//! `opsmesh demo`: the mesh in one process, fed the seed incidents the way Splunk sends them.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::Args;
use serde_json::{Value, json};

use opsmesh_proto::{
    Envelope,
    alert::Alert,
    approval::Approval,
    diagnosis::Diagnosis,
    remediation::Remediation,
    topics::{ALERTS, APPROVALS, DIAGNOSES, REMEDIATIONS},
};
use opsmesh_runtime::{
    Bus,
    bus::{MemoryBus, Subscription},
    launcher, shutdown, telemetry,
};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit once every incident reached an outcome, instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// How long to wait for every incident's outcome.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    pub timeout: Duration,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    text.strip_suffix("ms")
        .and_then(|n| n.parse().ok().map(Duration::from_millis))
        .or_else(|| {
            text.strip_suffix('s')
                .and_then(|n| n.parse().ok().map(Duration::from_secs))
        })
        .or_else(|| {
            text.strip_suffix('m')
                .and_then(|n| n.parse::<u64>().ok().map(|m| Duration::from_secs(m * 60)))
        })
        .ok_or_else(|| format!("{text:?} is not a duration like 500ms, 30s or 2m"))
}

/// The seed incidents, as the opsmesh Splunk alert action delivers them.
fn seed_alerts() -> Vec<Value> {
    let alert = |name: &str, sid: &str, rows: Value| {
        json!({
            "sid": sid,
            "search_name": name,
            "app": "opsmesh",
            "owner": "admin",
            "results_link": format!("https://splunk.example.com:8000/app/opsmesh/@go?sid={sid}"),
            "result": rows[0],
            "rows": rows,
        })
    };
    vec![
        alert(
            "KServe model error rate above 5%",
            "scheduler__admin__opsmesh__RMD5a1_at_1763604300_101",
            json!([{"model_name": "gpt-oss-120b", "namespace": "ml-team-a", "error_rate": "0.31", "restarts": "7"}]),
        ),
        alert(
            "Kyverno DENY events",
            "scheduler__admin__opsmesh__RMD5b2_at_1763604300_102",
            json!([{"policy": "disallow-root-containers", "namespace": "ml-team-b", "resource": "Pod/trainer-7f9c", "action": "DENY", "count": "3"}]),
        ),
        alert(
            "Namespace hourly cost above budget",
            "scheduler__admin__opsmesh__RMD5c3_at_1763604300_103",
            json!([{"namespace": "ml-team-c", "hourly_cost_usd": "96.00", "hourly_budget_usd": "40"}]),
        ),
    ]
}

pub fn run(config: Option<&Path>, args: DemoArgs) -> ExitCode {
    let super::Embedded { tree, local_secret } = match super::embedded_tree(config) {
        Ok(embedded) => embedded,
        Err(err) => return launcher::fail(&err),
    };
    let Some(secret) = local_secret else {
        return launcher::fail(
            &"opsmesh demo signs its alerts with the generated local source; \
             remove receiver.sources from the configuration to run it",
        );
    };
    let settings = match tree.settings() {
        Ok(settings) => settings,
        Err(err) => return launcher::fail(&err),
    };
    telemetry::init(&settings.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let bus = MemoryBus::new(&settings.bus.memory);
        let reporter_group = format!("{}{}", settings.bus.group_prefix, opsmesh_reporter::SERVICE.name);
        let shared: Arc<dyn Bus> = Arc::new(bus.clone());
        let app = match launcher::build(&tree, settings, crate::SERVICES, Some(shared.clone())).await {
            Ok(app) => app,
            Err(err) => return launcher::fail(&err),
        };
        let addr = app.local_addr();
        let stop = app.shutdown_token();
        shutdown::cancel_on_signal(stop.clone());
        let running = tokio::spawn(app.run_until_stopped());

        let timeline = match shared.subscribe("opsmesh-demo", &[ALERTS, DIAGNOSES, REMEDIATIONS, APPROVALS]).await {
            Ok(sub) => sub,
            Err(err) => return launcher::fail(&err),
        };
        println!("opsmesh demo: mesh up on http://{addr} (in-memory bus)");
        let client = reqwest::Client::new();
        let mut incidents = Vec::new();
        for body in seed_alerts() {
            match send(&client, addr, &secret, &body).await {
                Ok(incident) => incidents.push(incident),
                Err(err) => {
                    stop.cancel();
                    return launcher::fail(&err);
                }
            }
        }
        let finished = print_timelines(timeline, &incidents, args.timeout).await;
        // The reporter writes to HEC in its own consumer group: let it catch up first.
        let deadline = tokio::time::Instant::now() + args.timeout;
        while bus.lag(&reporter_group) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "\n{} of {} incidents reached an outcome. HEC events: see reporter.hec (default ./opsmesh.hec.jsonl).",
            finished,
            incidents.len()
        );
        if args.once {
            stop.cancel();
        } else {
            println!("Serving on http://{addr} until Ctrl-C.");
        }
        let stopped = running.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()));
        match (stopped, finished == incidents.len()) {
            (Ok(()), true) => ExitCode::SUCCESS,
            (Ok(()), false) => launcher::fail(&"not every incident reached an outcome in time"),
            (Err(err), _) => launcher::fail(&err),
        }
    })
}

/// Posts `body` signed like the opsmesh Splunk alert action does.
async fn send(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    secret: &str,
    body: &Value,
) -> Result<String, String> {
    let bytes = serde_json::to_vec(body).expect("JSON serializes");
    let signature = opsmesh_alert_receiver::sign(secret, chrono::Utc::now().timestamp(), &bytes);
    let response = client
        .post(format!("http://{addr}/v1/alerts/splunk"))
        .header("Content-Type", "application/json")
        .header(opsmesh_alert_receiver::SIGNATURE_HEADER, signature)
        .body(bytes)
        .send()
        .await
        .map_err(|e| format!("posting the demo alert: {e}"))?;
    let status = response.status();
    let reply: Value = response.json().await.map_err(|e| e.to_string())?;
    if status.as_u16() != 202 {
        return Err(format!("the receiver answered {status}: {reply}"));
    }
    reply["incident_key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no incident_key in {reply}"))
}

/// Prints every event of the given incidents as it arrives; returns how many incidents got
/// a remediation decision before the timeout.
async fn print_timelines(
    mut timeline: Box<dyn Subscription>,
    incidents: &[String],
    timeout: Duration,
) -> usize {
    let wanted: HashSet<&str> = incidents.iter().map(String::as_str).collect();
    let mut decided: BTreeMap<String, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while decided.len() < wanted.len() {
        let Ok(Ok(message)) = tokio::time::timeout_at(deadline, timeline.recv()).await else {
            break;
        };
        let Some(line) = describe(&message.payload) else {
            continue;
        };
        if !wanted.contains(line.incident.as_str()) {
            continue;
        }
        println!(
            "[{}] {} {:<11} {}",
            &line.incident[..8.min(line.incident.len())],
            line.at,
            line.kind,
            line.text
        );
        if line.kind == "decision" {
            decided.insert(line.incident, line.text);
        }
    }
    decided.len()
}

struct Line {
    incident: String,
    at: String,
    kind: &'static str,
    text: String,
}

fn describe(payload: &[u8]) -> Option<Line> {
    let schema: Value = serde_json::from_slice(payload).ok()?;
    let (kind, incident, at, text) = match schema["schema"].as_str()? {
        ALERTS => {
            let e = Envelope::<Alert>::from_slice(payload).ok()?;
            let target = e.payload.entity.target().unwrap_or_else(|| "-".into());
            (
                "alert",
                e.incident_id,
                e.occurred_at,
                format!(
                    "{:?} on {target} ({} rows)",
                    e.payload.name,
                    e.payload.rows.len()
                ),
            )
        }
        DIAGNOSES => {
            let e = Envelope::<Diagnosis>::from_slice(payload).ok()?;
            let d = &e.payload;
            (
                "diagnosis",
                e.incident_id,
                e.occurred_at,
                format!(
                    "{} (confidence {:.2}, {} evidence): {}",
                    d.root_cause,
                    d.confidence,
                    d.evidence.len(),
                    d.summary
                ),
            )
        }
        REMEDIATIONS => {
            let e = Envelope::<Remediation>::from_slice(payload).ok()?;
            (
                "decision",
                e.incident_id,
                e.occurred_at,
                format!("{}: {}", e.payload.state, e.payload.reason),
            )
        }
        APPROVALS => {
            let e = Envelope::<Approval>::from_slice(payload).ok()?;
            (
                "approval",
                e.incident_id,
                e.occurred_at,
                format!("{:?} by {}", e.payload.decision, e.payload.approver),
            )
        }
        _ => return None,
    };
    Some(Line {
        incident: incident?,
        at: at.format("%H:%M:%S%.3f").to_string(),
        kind,
        text,
    })
}
