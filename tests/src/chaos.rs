//! The chaos harness: the five services as OS processes on tansu with SQLite storage, against
//! the cluster simulator with OOM-looping models, reporting to the HEC test server, under a
//! storm of distinct alerts sent as the Splunk alert action sends them (retried on 5xx and
//! connection errors) while every service is SIGKILLed once and restarted within a second,
//! the broker restarts once, and HEC answers 503 for a while.
//!
//! `tests/tests/chaos.rs` asserts on what it returns; `opsmesh-bench chaos` prints it.
//! Every random choice comes from one seed, printed, so a failing run can be replayed
//! (`OPSMESH_CHAOS_SEED`).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

use opsmesh_sim::{Clock, Scenario, SimConfig, SimServer, Simulator};

use crate::{
    broker::Broker,
    hec::{HecServer, Mode},
    mesh::{SERVICES, base_env},
    process::Service,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// Distinct alerts of the storm.
    pub alerts: usize,
    /// OOM-looping models, spread over four namespaces.
    pub models: usize,
    /// Alert senders posting at once.
    pub senders: usize,
    /// The storm's alerts are spread evenly over this long.
    pub storm: Duration,
    /// Kill and restart every service once, restart the broker once, and take HEC away.
    pub faults: bool,
    pub hec_outage: Duration,
    /// How long after the storm the mesh may take to settle before the run is judged.
    pub settle: Duration,
}

impl Plan {
    /// The seed from `OPSMESH_CHAOS_SEED`, else a fresh one.
    pub fn seed_from_env() -> u64 {
        std::env::var("OPSMESH_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random)
    }
}

/// What happened, for assertions and figures.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// Sids answered `202`.
    pub accepted: BTreeSet<String>,
    /// Sids answered a 4xx other than 429, with the status and body (none expected).
    pub rejected: Vec<(String, u16, String)>,
    /// Sids never answered `202` before the sender gave up.
    pub abandoned: Vec<String>,
    /// HTTP attempts beyond the first, over all alerts.
    pub retries: usize,
    /// Accepted sids with no `opsmesh:alert` event in HEC.
    pub lost: Vec<String>,
    /// `opsmesh:alert` events beyond one per accepted sid.
    pub duplicate_alert_events: usize,
    /// Incident id → last ledger state indexed in HEC (`None`: no ledger record at all).
    pub incidents: BTreeMap<String, Option<String>>,
    /// `namespace/name` → successful cluster changes of that InferenceService.
    pub changes: BTreeMap<String, usize>,
    pub models: Vec<String>,
    pub audit_ok: bool,
    pub audit_output: String,
    /// What the fault driver did, and when (since the storm started).
    pub timeline: Vec<(Duration, String)>,
    /// From the first alert sent to the last one answered.
    pub storm_took: Duration,
    /// From the first alert sent to the moment everything was in HEC and decided.
    pub settled_after: Option<Duration>,
    pub logs: std::path::PathBuf,
    pub hec_events: usize,
}

impl Outcome {
    /// Incidents whose last ledger record is not terminal.
    pub fn undecided(&self) -> Vec<(&String, &Option<String>)> {
        self.incidents
            .iter()
            .filter(|(_, state)| !state.as_deref().is_some_and(is_terminal))
            .collect()
    }

    /// Models not changed exactly once.
    pub fn not_changed_once(&self) -> Vec<(&String, usize)> {
        self.models
            .iter()
            .map(|m| (m, self.changes.get(m).copied().unwrap_or(0)))
            .filter(|(_, n)| *n != 1)
            .collect()
    }

    pub fn print(&self) {
        eprintln!(
            "chaos run, seed {} (replay: OPSMESH_CHAOS_SEED={})",
            self.seed, self.seed
        );
        for (at, what) in &self.timeline {
            eprintln!("  {:>7.1}s  {what}", at.as_secs_f64());
        }
        let settled = self
            .settled_after
            .map_or("not within the limit".to_owned(), |d| {
                format!("{:.1}s", d.as_secs_f64())
            });
        eprintln!(
            "alerts: {} accepted (202), {} rejected, {} abandoned, {} retried attempts; storm took {:.1}s\n\
             HEC: {} events, {} accepted alerts lost, {} duplicate alert events\n\
             incidents: {}, undecided {}; models changed exactly once: {} of {}\n\
             audit verify: {}; settled after {settled}; logs in {}",
            self.accepted.len(),
            self.rejected.len(),
            self.abandoned.len(),
            self.retries,
            self.storm_took.as_secs_f64(),
            self.hec_events,
            self.lost.len(),
            self.duplicate_alert_events,
            self.incidents.len(),
            self.undecided().len(),
            self.models.len() - self.not_changed_once().len(),
            self.models.len(),
            if self.audit_ok { "OK" } else { "FAILED" },
            self.logs.display(),
        );
    }
}

fn is_terminal(state: &str) -> bool {
    state
        .parse::<opsmesh_proto::IncidentState>()
        .is_ok_and(opsmesh_proto::IncidentState::is_terminal)
}

const NAMESPACES: [&str; 4] = ["team-a", "team-b", "team-c", "team-d"];
/// Virtual seconds per wall second: an OOM loop turns every second, a pod starts in 0.5 s.
const SIM_SPEED: f64 = 20.0;
const SEARCH: &str = "KServe model error rate above 5%";

/// The simulated cluster and its HTTP server.
struct Cluster {
    sim: Simulator,
    _server: SimServer,
    kubeconfig: std::path::PathBuf,
    opencost: String,
    argocd: String,
    argocd_token: String,
}

impl Cluster {
    fn start(models: &[(String, String)], dir: &std::path::Path) -> Self {
        let mut yaml = String::from("name: chaos\nstate:\n  namespaces:\n");
        for ns in NAMESPACES {
            yaml.push_str(&format!("    - name: {ns}\n"));
        }
        yaml.push_str("  inference_services:\n");
        for (ns, model) in models {
            yaml.push_str(&format!(
                "    - {{namespace: {ns}, name: {model}, replicas: 1, memory_limit: 256Mi, image: registry.example.com/kserve/{model}:1.0.0}}\n"
            ));
        }
        yaml.push_str("faults:\n");
        for (ns, model) in models {
            yaml.push_str(&format!(
                "  - {{at: 0s, target: inferenceservice/{ns}/{model}, kind: oom_loop, params: {{memory_demand: 480Mi}}}}\n"
            ));
        }
        yaml.push_str("expect: {}\n");
        let scenario = Scenario::parse(&yaml, "chaos").expect("chaos cluster");
        let sim = Simulator::new(
            SimConfig::default(),
            Clock::scaled(chrono::Utc::now(), SIM_SPEED),
        );
        sim.seed(&scenario.state);
        for (at, fault, target) in scenario.resolved_faults() {
            sim.inject(at, fault, target);
        }
        let server = SimServer::start(sim.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("simulator listens");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig_yaml("default")).expect("kubeconfig");
        Self {
            opencost: server.opencost_url(),
            argocd: server.argocd_url(),
            argocd_token: server.argocd_token().to_owned(),
            sim,
            _server: server,
            kubeconfig,
        }
    }

    /// Successful changes of each InferenceService (dry runs and refusals left out).
    fn changes(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.sim.requests() {
            if r.api == "kubernetes"
                && r.resource.starts_with("inferenceservices")
                && !r.dry_run
                && (200..300).contains(&r.status)
                && matches!(r.verb.as_str(), "patch" | "update" | "apply" | "create")
            {
                *out.entry(format!("{}/{}", r.namespace, r.name))
                    .or_default() += 1;
            }
        }
        out
    }
}

/// Environment of each service, on top of `mesh::base_env`.
fn service_env(name: &str, cluster: &Cluster) -> Vec<(&'static str, String)> {
    let kubeconfig = cluster.kubeconfig.display().to_string();
    match name {
        "collector" => vec![
            ("OPSMESH__COLLECTOR__KUBECONFIG", kubeconfig),
            ("OPSMESH__COLLECTOR__INTERVAL", "1s".into()),
            (
                "OPSMESH__COLLECTOR__OPENCOST__URL",
                cluster.opencost.clone(),
            ),
            ("OPSMESH__COLLECTOR__ARGOCD__URL", cluster.argocd.clone()),
            (
                "OPSMESH__COLLECTOR__ARGOCD__TOKEN",
                cluster.argocd_token.clone(),
            ),
        ],
        // At 20x, the storm spans hours of virtual time, and every alert of it is about the
        // same ongoing problem: the quiet period after a fix must cover it.
        "diagnoser" => vec![("OPSMESH__DIAGNOSER__COOLDOWN", "12h".into())],
        "remediator" => vec![
            ("OPSMESH__REMEDIATOR__KUBECONFIG", kubeconfig),
            ("OPSMESH__REMEDIATOR__POLICY__MODE", "auto".into()),
            (
                "OPSMESH__REMEDIATOR__POLICY__ALLOWED_NAMESPACES",
                NAMESPACES.join(","),
            ),
            ("OPSMESH__REMEDIATOR__VERIFICATION__ATTEMPTS", "20".into()),
            (
                "OPSMESH__REMEDIATOR__VERIFICATION__INTERVAL",
                "500ms".into(),
            ),
            // Limits out of the way: every model is a separate, legitimate fix.
            (
                "OPSMESH__REMEDIATOR__POLICY__RATE_LIMIT__GLOBAL",
                "100000".into(),
            ),
            (
                "OPSMESH__REMEDIATOR__POLICY__RATE_LIMIT__PER_NAMESPACE",
                "100000".into(),
            ),
            (
                "OPSMESH__REMEDIATOR__POLICY__MAX_CONCURRENT_ACTIONS",
                "100000".into(),
            ),
        ],
        _ => Vec::new(),
    }
}

/// A fault the driver injects at `at` after the storm started.
#[derive(Debug, Clone)]
enum Fault {
    Kill {
        service: &'static str,
        down_for: Duration,
    },
    RestartBroker,
    HecDown(Duration),
}

fn fault_schedule(plan: &Plan, rng: &mut StdRng) -> Vec<(Duration, Fault)> {
    if !plan.faults {
        return Vec::new();
    }
    let storm = plan.storm.as_secs_f64();
    let at = |rng: &mut StdRng, from: f64, to: f64| {
        Duration::from_secs_f64(storm * rng.random_range(from..to))
    };
    let mut faults: Vec<(Duration, Fault)> = SERVICES
        .iter()
        .map(|(service, _)| {
            (
                at(rng, 0.05, 0.9),
                Fault::Kill {
                    service,
                    down_for: Duration::from_millis(rng.random_range(0..=1000)),
                },
            )
        })
        .collect();
    faults.push((at(rng, 0.1, 0.9), Fault::RestartBroker));
    faults.push((at(rng, 0.0, 0.5), Fault::HecDown(plan.hec_outage)));
    faults.sort_by_key(|(at, _)| *at);
    faults
}

/// Runs the plan and reports what happened; panics only when the harness itself cannot run.
pub async fn run(plan: &Plan) -> Outcome {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let faults = fault_schedule(plan, &mut rng);
    let logs = tempfile::tempdir().expect("log dir").keep();
    let models: Vec<(String, String)> = (0..plan.models)
        .map(|i| (NAMESPACES[i % 4].to_owned(), format!("model-{i}")))
        .collect();
    let cluster = Cluster::start(&models, &logs);
    let broker = Arc::new(Mutex::new(Broker::sqlite()));
    let hec = HecServer::start().await;

    let mut services = BTreeMap::new();
    {
        let broker = broker.lock().expect("broker");
        for (name, binary) in SERVICES {
            let mut env = base_env(&broker, &hec);
            env.extend(service_env(name, &cluster));
            let mut service = Service::new(name, crate::binary(binary), &[], &env, &logs);
            service.start();
            services.insert(*name, service);
        }
    }
    for service in services.values_mut() {
        service.wait_ready().await;
    }
    let receiver = services["alert-receiver"].url("/v1/alerts/splunk");
    let services = Arc::new(Mutex::new(services));

    // Let the OOM loops show in the collector's telemetry before the first alert, as they
    // would before a saved search fires.
    while cluster.sim.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let driver = tokio::spawn(drive_faults(
        faults,
        started,
        services.clone(),
        broker.clone(),
        hec.clone(),
        timeline.clone(),
    ));
    let sent = storm(plan, &receiver, &models, &cluster.sim, started).await;
    let storm_took = started.elapsed();
    driver.await.expect("fault driver");

    // Settled: every accepted alert is in HEC, and every incident has a terminal record.
    let deadline = Instant::now() + plan.settle;
    let settled_after = loop {
        let (lost, _, incidents) = judge(&hec, &sent.accepted);
        let decided = !incidents.is_empty()
            && incidents
                .values()
                .all(|s| s.as_deref().is_some_and(is_terminal));
        if lost.is_empty() && decided {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (lost, duplicate_alert_events, incidents) = judge(&hec, &sent.accepted);
    let (audit_ok, audit_output) = audit(&broker.lock().expect("broker").address());
    let outcome = Outcome {
        seed: plan.seed,
        accepted: sent.accepted,
        rejected: sent.rejected,
        abandoned: sent.abandoned,
        retries: sent.retries,
        lost,
        duplicate_alert_events,
        incidents,
        changes: cluster.changes(),
        models: models.iter().map(|(ns, m)| format!("{ns}/{m}")).collect(),
        audit_ok,
        audit_output,
        timeline: timeline.lock().expect("timeline").clone(),
        storm_took,
        settled_after,
        logs,
        hec_events: hec.events().len(),
    };
    services.lock().expect("services").clear();
    outcome
}

async fn drive_faults(
    faults: Vec<(Duration, Fault)>,
    started: Instant,
    services: Arc<Mutex<BTreeMap<&'static str, Service>>>,
    broker: Arc<Mutex<Broker>>,
    hec: HecServer,
    timeline: Arc<Mutex<Vec<(Duration, String)>>>,
) {
    let note = |what: String| {
        timeline
            .lock()
            .expect("timeline")
            .push((started.elapsed(), what));
    };
    let mut pending = Vec::new();
    for (at, fault) in faults {
        tokio::time::sleep_until((started + at).into()).await;
        match fault {
            Fault::Kill { service, down_for } => {
                kill(&services, service);
                note(format!("SIGKILL {service}, restart in {down_for:.1?}"));
                let services = services.clone();
                let timeline = timeline.clone();
                pending.push(tokio::spawn(async move {
                    tokio::time::sleep(down_for).await;
                    services
                        .lock()
                        .expect("services")
                        .get_mut(service)
                        .expect("service")
                        .start();
                    timeline
                        .lock()
                        .expect("timeline")
                        .push((started.elapsed(), format!("restarted {service}")));
                }));
            }
            Fault::RestartBroker => {
                note("broker restarting".into());
                let broker = broker.clone();
                tokio::task::spawn_blocking(move || broker.lock().expect("broker").restart())
                    .await
                    .expect("broker restart");
                note("broker back".into());
            }
            Fault::HecDown(for_) => {
                hec.set_mode(Mode::Busy);
                note(format!("HEC answers 503 for {for_:?}"));
                let hec = hec.clone();
                let timeline = timeline.clone();
                pending.push(tokio::spawn(async move {
                    tokio::time::sleep(for_).await;
                    hec.set_mode(Mode::Normal);
                    timeline
                        .lock()
                        .expect("timeline")
                        .push((started.elapsed(), "HEC back".into()));
                }));
            }
        }
    }
    for task in pending {
        task.await.expect("fault task");
    }
}

fn kill(services: &Mutex<BTreeMap<&'static str, Service>>, name: &str) {
    services
        .lock()
        .expect("services")
        .get_mut(name)
        .expect("service")
        .kill();
}

struct Sent {
    accepted: BTreeSet<String>,
    rejected: Vec<(String, u16, String)>,
    abandoned: Vec<String>,
    retries: usize,
}

/// Sends `plan.alerts` distinct alerts, evenly spread over `plan.storm`, each retried on 5xx,
/// 429 and connection errors as the opsmesh alert action does, for up to two minutes.
async fn storm(
    plan: &Plan,
    url: &str,
    models: &[(String, String)],
    sim: &Simulator,
    started: Instant,
) -> Sent {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(Mutex::new(Sent {
        accepted: BTreeSet::new(),
        rejected: Vec::new(),
        abandoned: Vec::new(),
        retries: 0,
    }));
    let spacing = plan.storm.div_f64(plan.alerts.max(1) as f64);
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..plan.senders.max(1) {
        let (client, next, sent, url) =
            (client.clone(), next.clone(), sent.clone(), url.to_owned());
        let (models, sim, total) = (models.to_vec(), sim.clone(), plan.alerts);
        senders.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                tokio::time::sleep_until((started + spacing * i as u32).into()).await;
                let (ns, model) = &models[i % models.len()];
                let virtual_now = sim.clock().now().timestamp();
                let sid = format!("scheduler__admin__opsmesh__RMD5chaos{i:06}_at_{virtual_now}_{i}");
                let body = json!({
                    "sid": sid, "search_name": SEARCH, "app": "opsmesh", "owner": "admin",
                    "results_link": format!("https://splunk.example.com:8000/app/opsmesh/@go?sid={sid}"),
                    "result": {"_time": virtual_now.to_string(), "model_name": model, "namespace": ns,
                               "error_rate": "0.31", "restarts": "7"},
                });
                let (attempts, result) = deliver(&client, &url, &body).await;
                let mut sent = sent.lock().expect("sent");
                sent.retries += attempts - 1;
                match result {
                    Delivery::Accepted => {
                        sent.accepted.insert(sid);
                    }
                    Delivery::Rejected(status, text) => sent.rejected.push((sid, status, text)),
                    Delivery::GaveUp => sent.abandoned.push(sid),
                }
            }
        });
    }
    while let Some(joined) = senders.join_next().await {
        joined.expect("sender");
    }
    Arc::try_unwrap(sent)
        .ok()
        .expect("senders finished")
        .into_inner()
        .expect("sent")
}

enum Delivery {
    Accepted,
    Rejected(u16, String),
    GaveUp,
}

/// One alert, as the alert action delivers it: retried with backoff on connection errors,
/// 429 and 5xx; a 4xx is final.
async fn deliver(client: &reqwest::Client, url: &str, body: &Value) -> (usize, Delivery) {
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match crate::mesh::signed_post(client, url, body).send().await {
            Ok(response) if response.status().as_u16() == 202 => {
                return (attempts, Delivery::Accepted);
            }
            Ok(response)
                if response.status().is_client_error() && response.status().as_u16() != 429 =>
            {
                let status = response.status().as_u16();
                return (
                    attempts,
                    Delivery::Rejected(status, response.text().await.unwrap_or_default()),
                );
            }
            Ok(_) | Err(_) => {}
        }
        if Instant::now() > give_up {
            return (attempts, Delivery::GaveUp);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Lost accepted sids, duplicate alert events, and each incident's last ledger state, as HEC
/// holds them.
fn judge(
    hec: &HecServer,
    accepted: &BTreeSet<String>,
) -> (Vec<String>, usize, BTreeMap<String, Option<String>>) {
    let events = hec.events();
    let mut alerts: HashMap<String, usize> = HashMap::new();
    let mut incidents: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for event in &events {
        let body = &event["event"];
        match event["sourcetype"].as_str() {
            Some("opsmesh:alert") => {
                if let Some(sid) = body["payload"]["sid"].as_str() {
                    *alerts.entry(sid.to_owned()).or_default() += 1;
                }
            }
            Some("opsmesh:diagnosis") => {
                if let Some(id) = body["incident_id"].as_str() {
                    incidents.entry(id.to_owned()).or_default();
                }
            }
            Some("opsmesh:remediation") => {
                let (Some(id), Some(state)) = (
                    body["incident_id"].as_str(),
                    body["payload"]["state"].as_str(),
                ) else {
                    continue;
                };
                // Records may reach HEC out of order across partitions and redeliveries: the
                // chain's sequence number says which is last.
                let seq = body["payload"]["ledger"]["seq"].as_u64().unwrap_or(0);
                let newer = last_seq.get(id).is_none_or(|last| seq >= *last);
                if newer {
                    last_seq.insert(id.to_owned(), seq);
                    incidents.insert(id.to_owned(), Some(state.to_owned()));
                }
            }
            _ => {}
        }
    }
    let lost = accepted
        .iter()
        .filter(|sid| !alerts.contains_key(*sid))
        .cloned()
        .collect();
    let duplicates = alerts.values().map(|n| n.saturating_sub(1)).sum();
    (lost, duplicates, incidents)
}

/// `opsmesh audit verify` over the ledger topic, as an operator runs it.
fn audit(brokers: &str) -> (bool, String) {
    // Every record must carry the remediator's signature, and every signed chain head must
    // still be in its chain.
    let keys = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(keys.path(), crate::keys::keys().ledger.public_pem()).expect("key file");
    let output = std::process::Command::new(crate::binary("opsmesh"))
        .args(["audit", "verify", "--keys"])
        .arg(keys.path())
        .env("OPSMESH__BUS__KIND", "kafka")
        .env("OPSMESH__BUS__KAFKA__BROKERS", brokers)
        .output()
        .expect("opsmesh audit verify runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
