//! `opsmesh scenario run FILE|DIR`: a scenario through the whole mesh in one process, against
//! the cluster simulator, under a virtual clock; prints the verdict JSON.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState,
    alert::{Alert, AlertStatus},
    diagnosis::Diagnosis,
    incident::{IncidentRecord, IncidentStatus},
    remediation::{ActionMode, Remediation},
    topics::{ALERTS, DIAGNOSES, INCIDENTS, REMEDIATIONS},
};
use opsmesh_runtime::{
    Bus, ConfigTree,
    bus::{MemoryBus, Subscription},
    launcher, telemetry,
};
use opsmesh_sim::{
    Scenario, SimConfig, SimServer, Simulator,
    duration::format_duration,
    scenario::{AlertSpec, Outcome, Via},
};

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Run a scenario file (or every *.yaml in a directory) and print the verdict JSON.
    ///
    /// Exit status 0 only when every check of every scenario passed.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A scenario file, or a directory of them.
    pub path: PathBuf,
    /// Print only JSON: the verdict for a file, an array of verdicts for a directory.
    #[arg(long)]
    pub json: bool,
    /// Virtual seconds the clock advances per wall-clock second while waiting for outcomes
    /// [default: the scenario's `speed`, else 200].
    ///
    /// Overrides every scenario's `speed`; 0 leaves it to them.
    #[arg(long, default_value_t = 0.0, hide_default_value = true, value_parser = parse_speed)]
    pub speed: f64,
    /// Wall-clock bound on one scenario.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    pub timeout: u64,
    /// Copy each scenario's HEC events (what Splunk would index) to DIR/<scenario>.hec.jsonl.
    #[arg(long, value_name = "DIR")]
    pub hec_out: Option<PathBuf>,
}

/// Virtual seconds per real second when neither `--speed` nor the scenario says.
const DEFAULT_SPEED: f64 = 200.0;

fn parse_speed(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a number of virtual seconds per real second"))
}

/// The speed one scenario runs at: `--speed`, else its own `speed`, else the default.
fn speed_for(args: &RunArgs, scenario: &Scenario) -> f64 {
    if args.speed > 0.0 {
        args.speed
    } else {
        scenario.speed.unwrap_or(DEFAULT_SPEED)
    }
}

const SOURCE: &str = "scenario";
/// Virtual step while waiting for outcomes, and the real pause that goes with it.
const STEP: Duration = Duration::from_secs(5);
const DEFAULT_WITHIN: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub expected: Value,
    pub actual: Value,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionSeen {
    pub kind: ActionKind,
    pub target: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub scenario: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checks: Vec<Check>,
    pub incidents: usize,
    pub actions: Vec<ActionSeen>,
    pub outcome: Option<String>,
    pub time_to_outcome: Option<String>,
    pub llm_tokens: u64,
    pub hec_events: usize,
}

impl Verdict {
    fn failed(name: String, error: String) -> Self {
        Self {
            scenario: name,
            passed: false,
            error: Some(error),
            checks: Vec::new(),
            incidents: 0,
            actions: Vec::new(),
            outcome: None,
            time_to_outcome: None,
            llm_tokens: 0,
            hec_events: 0,
        }
    }
}

pub fn run(config: Option<&Path>, command: ScenarioCommand) -> ExitCode {
    let ScenarioCommand::Run(args) = command;
    let files = match scenario_files(&args.path) {
        Ok(f) => f,
        Err(e) => return launcher::fail(&e),
    };
    let is_dir = args.path.is_dir();
    let probe = match ConfigTree::load_layered(
        Some("[log]\nlevel = \"warn\"\n[bus]\nkind = \"memory\"\n"),
        config,
        std::env::vars(),
    ) {
        Ok(t) => t,
        Err(e) => return launcher::fail(&e),
    };
    match probe.settings() {
        Ok(s) => telemetry::init(&s.log),
        Err(e) => return launcher::fail(&e),
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let verdicts: Vec<Verdict> = runtime.block_on(async {
        let mut out = Vec::new();
        for file in &files {
            let verdict = match Scenario::load(file) {
                Err(e) => Verdict::failed(file.display().to_string(), e.to_string()),
                Ok(scenario) => run_one(&scenario, config, &args).await,
            };
            if is_dir && !args.json {
                println!(
                    "{}",
                    serde_json::to_string(&verdict).expect("verdicts serialize")
                );
            }
            out.push(verdict);
        }
        out
    });
    if !is_dir {
        let v = &verdicts[0];
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("verdicts serialize")
        );
        if !args.json {
            eprintln!("{} {}", if v.passed { "PASS" } else { "FAIL" }, v.scenario);
        }
    } else if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdicts).expect("verdicts serialize")
        );
    } else {
        println!(
            "\n{:<40} {:<6} {:<18} {:<10} failed checks",
            "scenario", "result", "outcome", "time"
        );
        for v in &verdicts {
            let failed: Vec<&str> = v
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            println!(
                "{:<40} {:<6} {:<18} {:<10} {}",
                v.scenario,
                if v.passed { "PASS" } else { "FAIL" },
                v.outcome.as_deref().unwrap_or("-"),
                v.time_to_outcome.as_deref().unwrap_or("-"),
                v.error.clone().unwrap_or_else(|| failed.join(", "))
            );
        }
        let passed = verdicts.iter().filter(|v| v.passed).count();
        println!("{passed} passed, {} failed", verdicts.len() - passed);
    }
    if verdicts.iter().all(|v| v.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn scenario_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("{}: no *.yaml scenario files", path.display()));
        }
        Ok(files)
    } else if path.is_file() {
        Ok(vec![path.to_owned()])
    } else {
        Err(format!("{}: no such file or directory", path.display()))
    }
}

/// What the runner saw on the bus, stamped with virtual time.
#[derive(Default)]
struct Observed {
    alerts: Vec<(Duration, Envelope<Alert>)>,
    diagnoses: Vec<(Duration, Envelope<Diagnosis>)>,
    remediations: Vec<(Duration, Envelope<Remediation>)>,
    /// The diagnoser's incident records: the only place a `cleared` outcome shows.
    records: Vec<(Duration, Envelope<IncidentRecord>)>,
}

impl Observed {
    fn incidents(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let source: Vec<Option<String>> = if self.diagnoses.is_empty() {
            self.alerts
                .iter()
                .map(|(_, e)| e.incident_id.clone())
                .collect()
        } else {
            self.diagnoses
                .iter()
                .map(|(_, e)| e.incident_id.clone())
                .collect()
        };
        for id in source.into_iter().flatten() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    fn final_state(&self, incident: &str) -> Option<(Duration, Outcome)> {
        let cleared = self.records.iter().find(|(_, e)| {
            e.payload.incident_id == incident && e.payload.status == IncidentStatus::Cleared
        });
        if let Some((t, _)) = cleared {
            return Some((*t, Outcome::Cleared));
        }
        self.remediations
            .iter()
            .rev()
            .find(|(_, e)| e.incident_id.as_deref() == Some(incident))
            .map(|(t, e)| (*t, Outcome::State(e.payload.state)))
    }

    /// Every incident seen so far reached an outcome (none seen yet: not settled).
    fn settled(&self) -> bool {
        let incidents = self.incidents();
        !incidents.is_empty()
            && incidents
                .iter()
                .all(|i| self.final_state(i).is_some_and(|(_, s)| s.is_final()))
    }
}

struct Files {
    _dir: tempfile::TempDir,
    hec: PathBuf,
    secret: String,
    path_token: String,
    bearer: String,
    toml: String,
}

fn prepare(scenario: &Scenario, server: &SimServer) -> std::io::Result<Files> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig_yaml("default"))?;
    let hec = dir.path().join("hec.jsonl");
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let path_token = uuid::Uuid::new_v4().simple().to_string();
    let bearer = uuid::Uuid::new_v4().simple().to_string();
    let write = |name: &str, value: &str| -> std::io::Result<PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, value)?;
        Ok(p)
    };
    let secrets_file = write("signing.secret", &secret)?;
    let path_file = write("path.token", &path_token)?;
    let bearer_file = write("bearer.tokens", &bearer)?;
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let toml = format!(
        "cluster = {cluster:?}\n\
         [http]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [log]\nlevel = \"warn\"\n\
         [bus]\nkind = \"memory\"\n\
         [receiver.sources.{SOURCE}]\nsecrets_file = {sf}\npath_token_file = {pf}\nbearer_tokens_file = {bf}\n\
         [reporter.hec]\nfile = {hec}\n\
         [collector]\ninterval = \"250ms\"\nsource_timeout = \"2s\"\nkubeconfig = {kc}\n\
         [collector.opencost]\nurl = {oc:?}\nwindow = \"10m\"\n\
         [collector.argocd]\nurl = {argo:?}\ntoken = {token:?}\n\
         [remediator]\nkubeconfig = {kc}\nrequest_timeout = \"5s\"\n\
         [remediator.argocd]\nurl = {argo:?}\ntoken = {token:?}\n\
         [remediator.verification]\nattempts = 20\ninterval = \"100ms\"\n\
         [remediator.policy]\nmode = {mode:?}\n{allowed}",
        cluster = scenario.cluster,
        sf = q(&secrets_file),
        pf = q(&path_file),
        bf = q(&bearer_file),
        hec = q(&hec),
        kc = q(&kubeconfig),
        oc = server.opencost_url(),
        argo = server.argocd_url(),
        token = server.argocd_token(),
        mode = scenario
            .policy
            .as_ref()
            .map_or("auto", |p| opsmesh_remediator::plan::mode_name(p.mode)),
        allowed = match scenario
            .policy
            .as_ref()
            .and_then(|p| p.allowed_namespaces.as_ref())
        {
            Some(list) => format!("allowed_namespaces = {list:?}\n"),
            None => String::new(),
        },
    );
    Ok(Files {
        _dir: dir,
        hec,
        secret,
        path_token,
        bearer,
        toml,
    })
}

/// Every delivery of every alert, by virtual time.
fn schedule(scenario: &Scenario) -> Vec<(Duration, usize, u32)> {
    let mut out = Vec::new();
    for (i, a) in scenario.alerts.iter().enumerate() {
        let every = a
            .value
            .every
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        for n in 0..a.value.repeat {
            out.push((a.value.at.0 + every * n, i, n));
        }
    }
    out.sort_by_key(|(t, i, n)| (*t, *i, *n));
    out
}

async fn deliver(
    http: &reqwest::Client,
    receiver: std::net::SocketAddr,
    files: &Files,
    alert: &AlertSpec,
    n: u32,
    virtual_now: chrono::DateTime<chrono::Utc>,
    starts_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let rows = alert.string_rows();
    let ts = virtual_now.timestamp();
    let sid = format!(
        "scheduler__admin__opsmesh__RMD5{:08x}_at_{ts}_{n}",
        fxhash(&alert.search_name)
    );
    let link = format!("https://splunk.example.com:8000/app/opsmesh/@go?sid={sid}");
    let (url, body, auth): (String, Value, Option<(&str, String)>) = match alert.via {
        Via::SplunkAlertAction => (
            format!("http://{receiver}/v1/alerts/splunk"),
            json!({"sid": sid, "search_name": alert.search_name, "app": "opsmesh", "owner": "admin", "results_link": link, "result": rows[0], "rows": rows}),
            None,
        ),
        Via::SplunkWebhook => (
            format!(
                "http://{receiver}/v1/alerts/splunk/{SOURCE}/{}",
                files.path_token
            ),
            json!({"sid": sid, "search_name": alert.search_name, "app": "opsmesh", "owner": "admin", "results_link": link, "result": rows[0]}),
            None,
        ),
        Via::Alertmanager => {
            let mut labels = serde_json::Map::new();
            for (k, v) in &rows[0] {
                labels.insert(
                    k.clone(),
                    json!(
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    ),
                );
            }
            labels.insert("alertname".into(), json!(alert.search_name));
            let stamp = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            // As Alertmanager sends it: a resolved alert keeps the episode's start and says
            // when it ended; a firing one has no end (Go's zero time).
            let (status, ends) = match alert.status {
                AlertStatus::Firing => ("firing", "0001-01-01T00:00:00Z".to_owned()),
                AlertStatus::Resolved => ("resolved", stamp(virtual_now)),
            };
            (
                format!("http://{receiver}/v1/alerts/alertmanager"),
                json!({
                    "version": "4", "groupKey": format!("{{}}:{{alertname=\"{}\"}}", alert.search_name), "truncatedAlerts": 0,
                    "status": status, "receiver": "opsmesh", "groupLabels": {"alertname": alert.search_name},
                    "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://alertmanager.example.com",
                    "alerts": [{"status": status, "labels": labels, "annotations": {}, "startsAt": stamp(starts_at), "endsAt": ends, "generatorURL": "http://prometheus.example.com/graph"}],
                }),
                Some(("authorization", format!("Bearer {}", files.bearer))),
            )
        }
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let mut request = http.post(&url).header("content-type", "application/json");
    if alert.via == Via::SplunkAlertAction {
        let signature =
            opsmesh_alert_receiver::sign(&files.secret, chrono::Utc::now().timestamp(), &bytes);
        request = request.header(opsmesh_alert_receiver::SIGNATURE_HEADER, signature);
    }
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    let response = request
        .body(bytes)
        .send()
        .await
        .map_err(|e| format!("posting the alert: {e}"))?;
    let status = response.status();
    if status.as_u16() != 202 {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("the receiver answered {status}: {text}"));
    }
    Ok(())
}

fn fxhash(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    })
}

async fn watch(mut sub: Box<dyn Subscription>, sim: Simulator, seen: Arc<Mutex<Observed>>) {
    while let Ok(message) = sub.recv().await {
        let at = sim.elapsed();
        let mut o = seen.lock().expect("observed lock");
        match message.topic.as_str() {
            ALERTS => {
                if let Ok(e) = Envelope::<Alert>::from_slice(&message.payload) {
                    o.alerts.push((at, e));
                }
            }
            DIAGNOSES => {
                if let Ok(e) = Envelope::<Diagnosis>::from_slice(&message.payload) {
                    o.diagnoses.push((at, e));
                }
            }
            REMEDIATIONS => {
                if let Ok(e) = Envelope::<Remediation>::from_slice(&message.payload) {
                    o.remediations.push((at, e));
                }
            }
            INCIDENTS => {
                if let Ok(e) = Envelope::<IncidentRecord>::from_slice(&message.payload) {
                    o.records.push((at, e));
                }
            }
            _ => {}
        }
        let _ = sub.store(&message);
    }
}

/// Runs one scenario end to end and judges it.
pub async fn run_one(scenario: &Scenario, config: Option<&Path>, args: &RunArgs) -> Verdict {
    match tokio::time::timeout(
        Duration::from_secs(args.timeout),
        play(scenario, config, args),
    )
    .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Verdict::failed(scenario.name.clone(), e),
        Err(_) => Verdict::failed(
            scenario.name.clone(),
            format!("did not finish within {} s (--timeout)", args.timeout),
        ),
    }
}

async fn play(
    scenario: &Scenario,
    config: Option<&Path>,
    args: &RunArgs,
) -> Result<Verdict, String> {
    let sim = Simulator::from_scenario(scenario, SimConfig::default());
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().expect("address"))
        .map_err(|e| format!("starting the simulator: {e}"))?;
    let files = prepare(scenario, &server).map_err(|e| format!("preparing files: {e}"))?;
    let probe = ConfigTree::load(config).map_err(|e| e.to_string())?;
    let defaults = files.toml.clone() + &super::keys::embedded(&probe, false)?;
    let tree = ConfigTree::load_layered(Some(&defaults), config, std::env::vars())
        .map_err(|e| e.to_string())?;
    let settings = tree.settings().map_err(|e| e.to_string())?;
    let bus = MemoryBus::new(&settings.bus.memory);
    let reporter_group = format!(
        "{}{}",
        settings.bus.group_prefix,
        opsmesh_reporter::SERVICE.name
    );
    let diagnoser_group = format!(
        "{}{}",
        settings.bus.group_prefix,
        opsmesh_diagnoser::SERVICE.name
    );
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());
    let app = launcher::build(&tree, settings, crate::SERVICES, Some(shared.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let receiver = app.local_addr();
    let stop = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let seen = Arc::new(Mutex::new(Observed::default()));
    let sub = shared
        .subscribe(
            "opsmesh-scenario-runner",
            &[ALERTS, DIAGNOSES, REMEDIATIONS, INCIDENTS],
        )
        .await
        .map_err(|e| e.to_string())?;
    let watcher = tokio::spawn(watch(sub, sim.clone(), seen.clone()));

    let http = reqwest::Client::new();
    let plan = schedule(scenario);
    let within = scenario
        .expect
        .within
        .map(|d| d.0)
        .unwrap_or(DEFAULT_WITHIN);
    let pause = Duration::from_secs_f64(STEP.as_secs_f64() / speed_for(args, scenario));
    let collector_pass = Duration::from_millis(400);
    let mut first_alert: Option<Duration> = None;
    let mut last_fresh = Duration::ZERO;
    let mut failure = None;
    // When each alert (by name and labels) began firing, for the `startsAt` of its resolution.
    let mut firing_since: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        std::collections::HashMap::new();
    tokio::time::sleep(collector_pass).await;
    for (at, index, n) in &plan {
        // Time passes towards the next alert as it would for a live mesh: step by step while
        // incidents are still being handled, so an alert forty virtual minutes later finds the
        // earlier incident closed (a recurrence), not still open. Once everything settled
        // nothing moves, and the clock jumps.
        while sim.elapsed() + STEP <= *at && !seen.lock().expect("observed lock").settled() {
            sim.advance(STEP);
            tokio::time::sleep(pause).await;
        }
        sim.advance_to(*at);
        if *at > last_fresh + Duration::from_secs(30) {
            // Let the collector see the cluster as it is now before Splunk would alert.
            tokio::time::sleep(collector_pass).await;
            last_fresh = *at;
        }
        first_alert.get_or_insert(*at);
        let alert = &scenario.alerts[*index].value;
        let now = sim.clock().now();
        let identity = format!("{}/{:?}", alert.search_name, alert.rows[0]);
        // A firing delivery is stamped with its own time, as the runner always did (repeats
        // stay distinct deliveries for the receiver's dedup); a resolution carries the start
        // of the episode it ends, as Alertmanager sends it, and a later firing begins anew.
        let starts_at = match alert.status {
            AlertStatus::Firing => {
                firing_since.entry(identity).or_insert(now);
                now
            }
            AlertStatus::Resolved => firing_since.remove(&identity).unwrap_or(now),
        };
        if let Err(e) = deliver(&http, receiver, &files, alert, *n, now, starts_at).await {
            failure = Some(e);
            break;
        }
        tokio::time::sleep(pause).await;
    }

    // Advance the clock until every incident reached an outcome, or `within` passed.
    let start = first_alert.unwrap_or_default();
    let mut outcome_at: Option<Duration> = None;
    if failure.is_none() && first_alert.is_some() {
        // Every alert decided before outcomes are judged: a resolution arriving after the
        // incident reached another outcome (awaiting approval) must still get to close it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while bus.lag(&diagnoser_group) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            if seen.lock().expect("observed lock").settled() {
                outcome_at = Some(sim.elapsed());
                break;
            }
            if sim.elapsed() >= start + within {
                break;
            }
            sim.advance(STEP);
            tokio::time::sleep(pause).await;
        }
        // Late records (verification, follow-up actions) without moving the clock much.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bus.lag(&reporter_group) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let _ = running.await;
    watcher.abort();
    server.stop().await;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(dir) = &args.hec_out {
        let copy = std::fs::create_dir_all(dir).and_then(|()| {
            std::fs::copy(&files.hec, dir.join(format!("{}.hec.jsonl", scenario.name)))
        });
        if let Err(err) = copy {
            tracing::warn!(error = %err, "could not copy the HEC events");
        }
    }
    let hec_events = std::fs::read_to_string(&files.hec)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    let observed = seen.lock().expect("observed lock");
    Ok(judge(
        scenario, &observed, &sim, start, outcome_at, hec_events,
    ))
}

fn judge(
    scenario: &Scenario,
    o: &Observed,
    sim: &Simulator,
    start: Duration,
    outcome_at: Option<Duration>,
    hec_events: usize,
) -> Verdict {
    let incidents = o.incidents();
    let mut checks = Vec::new();
    let mut check = |name: &str, expected: Value, actual: Value, passed: bool| {
        checks.push(Check {
            name: name.into(),
            expected,
            actual,
            passed,
        });
    };
    let expect = &scenario.expect;
    if let Some(n) = expect.incidents {
        check(
            "incidents",
            json!(n),
            json!(incidents.len()),
            incidents.len() == n as usize,
        );
    }
    if let Some(rc) = expect.root_cause {
        let mut actual: Vec<String> = Vec::new();
        let mut all = !incidents.is_empty();
        for i in &incidents {
            match o
                .diagnoses
                .iter()
                .rev()
                .find(|(_, d)| d.incident_id.as_deref() == Some(i.as_str()))
            {
                Some((_, d)) => {
                    all &= d.payload.root_cause == rc;
                    actual.push(d.payload.root_cause.to_string());
                }
                None => {
                    all = false;
                    actual.push("none diagnosed".into());
                }
            }
        }
        actual.dedup();
        check("root_cause", json!(rc), json!(actual.join(",")), all);
    }
    // Executed actions per incident, in order; dry runs, plans and refusals are not executed.
    let mut actions: Vec<ActionSeen> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for i in &incidents {
        let mut last_target = None;
        for (at, r) in o
            .remediations
            .iter()
            .filter(|(_, r)| r.incident_id.as_deref() == Some(i.as_str()))
        {
            let Some(a) = &r.payload.action else { continue };
            last_target = Some(a.target.clone());
            let executed = a.mode != ActionMode::DryRun
                && !matches!(
                    r.payload.state,
                    IncidentState::Planned
                        | IncidentState::AwaitingApproval
                        | IncidentState::Refused
                        | IncidentState::DryRun
                );
            if executed && !keys.contains(&a.idempotency_key) {
                keys.push(a.idempotency_key.clone());
                actions.push(ActionSeen {
                    kind: a.kind,
                    target: a.target.clone(),
                    at: format_duration(*at),
                });
            }
        }
        // Escalated means humans were told: that is the incident's last action.
        if let Some((at, Outcome::State(IncidentState::Escalated))) = o.final_state(i)
            && actions
                .last()
                .is_none_or(|a| a.kind != ActionKind::Escalate)
        {
            let target = last_target
                .or_else(|| {
                    o.diagnoses
                        .iter()
                        .rev()
                        .find(|(_, d)| d.incident_id.as_deref() == Some(i.as_str()))
                        .and_then(|(_, d)| d.payload.target.clone())
                })
                .unwrap_or_default();
            actions.push(ActionSeen {
                kind: ActionKind::Escalate,
                target,
                at: format_duration(at),
            });
        }
    }
    if let Some(expected) = &expect.actions {
        let matches = expected.len() == actions.len()
            && expected
                .iter()
                .zip(&actions)
                .all(|(e, a)| e.kind == a.kind && e.target.as_ref().is_none_or(|t| *t == a.target));
        let exp: Vec<Value> = expected
            .iter()
            .map(|e| json!({"kind": e.kind, "target": e.target}))
            .collect();
        let act: Vec<Value> = actions
            .iter()
            .map(|a| json!({"kind": a.kind, "target": a.target}))
            .collect();
        check("actions", json!(exp), json!(act), matches);
        let mutating = expected
            .iter()
            .any(|e| !matches!(e.kind, ActionKind::SuggestPolicyFix | ActionKind::Escalate));
        if !mutating {
            let changes: Vec<String> = sim
                .requests()
                .into_iter()
                .filter(|r| !r.dry_run && (200..300).contains(&r.status))
                .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
                .collect();
            check(
                "cluster_unchanged",
                json!([]),
                json!(changes),
                changes.is_empty(),
            );
        }
    }
    let outcomes: Vec<Option<Outcome>> = incidents
        .iter()
        .map(|i| o.final_state(i).map(|(_, s)| s))
        .collect();
    let outcome = match outcomes.last() {
        Some(Some(s)) => Some(s.to_string()),
        _ => None,
    };
    if let Some(expected) = expect.outcome {
        // The outcome of the last incident (a recurrence's differs from its predecessor's);
        // every earlier one must have reached an outcome too.
        let passed = outcomes.last() == Some(&Some(expected))
            && outcomes.iter().all(|s| s.is_some_and(Outcome::is_final));
        let actual: Vec<String> = outcomes
            .iter()
            .map(|s| s.map_or("none".into(), |s| s.to_string()))
            .collect();
        check("outcome", json!(expected), json!(actual.join(",")), passed);
    }
    // When the last incident reached its outcome (as observed on the bus, in virtual time).
    let time_to_outcome = outcome_at
        .and_then(|_| {
            incidents
                .iter()
                .filter_map(|i| o.final_state(i).map(|(t, _)| t))
                .max()
        })
        .map(|t| t.saturating_sub(start));
    if let Some(within) = expect.within {
        check(
            "within",
            json!(format_duration(within.0)),
            json!(time_to_outcome.map(format_duration)),
            time_to_outcome.is_some_and(|t| t <= within.0),
        );
    }
    let llm_tokens: u64 = o
        .diagnoses
        .iter()
        .map(|(_, d)| d.payload.llm.prompt_tokens + d.payload.llm.completion_tokens)
        .sum();
    Verdict {
        scenario: scenario.name.clone(),
        passed: checks.iter().all(|c| c.passed),
        error: None,
        checks,
        incidents: incidents.len(),
        actions,
        outcome,
        time_to_outcome: time_to_outcome.map(format_duration),
        llm_tokens,
        hec_events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            path: PathBuf::new(),
            json: true,
            speed: 400.0,
            timeout: 60,
            hec_out: None,
        }
    }

    fn public(name: &str) -> Scenario {
        let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../../tests/scenarios")
            .join(name);
        Scenario::load(&path).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthy_control_runs_through_the_mesh() {
        let scenario = public("healthy-control.yaml");
        let v = run_one(&scenario, None, &args()).await;
        assert!(v.error.is_none(), "{v:?}");
        assert_eq!(v.incidents, 1, "{v:?}");
        assert!(v.hec_events > 0, "{v:?}");
        let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "incidents",
                "root_cause",
                "actions",
                "cluster_unchanged",
                "outcome",
                "within"
            ]
        );
        for name in ["incidents", "cluster_unchanged"] {
            assert!(
                v.checks.iter().find(|c| c.name == name).unwrap().passed,
                "{v:?}"
            );
        }
        assert!(v.outcome.is_some(), "an outcome was reached: {v:?}");
        let json = serde_json::to_value(&v).unwrap();
        for key in [
            "scenario",
            "passed",
            "checks",
            "incidents",
            "actions",
            "outcome",
            "time_to_outcome",
            "llm_tokens",
            "hec_events",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_delivery_format_reaches_the_receiver() {
        let yaml = r#"
name: formats
state:
  namespaces: [{name: ml-team-c}]
  inference_services: [{namespace: ml-team-c, name: whisper-large}]
alerts:
  - {at: 1m, via: splunk_alert_action, search_name: "A", rows: [{model_name: whisper-large, namespace: ml-team-c}]}
  - {at: 1m, via: splunk_webhook, search_name: "B", rows: [{model_name: whisper-large, namespace: ml-team-c}]}
  - {at: 1m, via: alertmanager, search_name: "C", repeat: 2, every: 30s, rows: [{name: x, namespace: ml-team-c}]}
expect:
  incidents: 3
  within: 5m
"#;
        let scenario = Scenario::parse(yaml, "formats.yaml").unwrap();
        let v = run_one(&scenario, None, &args()).await;
        assert!(v.error.is_none(), "{v:?}");
        // Every delivery was answered 202 (a refusal is an error), whatever the diagnoser
        // then coalesces.
        assert!(v.incidents >= 1 && v.hec_events > 0, "{v:?}");
    }

    /// A golden example from `proto/examples`, edited.
    fn golden<P: opsmesh_proto::Payload>(edit: impl FnOnce(&mut Value)) -> Envelope<P> {
        let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../../proto/examples")
            .join(format!("{}.json", P::SCHEMA));
        let mut value: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        edit(&mut value);
        Envelope::from_slice(value.to_string().as_bytes()).unwrap()
    }

    fn remediation(state: &str) -> Envelope<Remediation> {
        golden(|v| v["payload"]["state"] = json!(state))
    }

    #[test]
    fn an_incident_the_sender_cleared_stays_cleared_whatever_the_remediator_does_later() {
        let minute = Duration::from_secs(60);
        let mut o = Observed::default();
        o.remediations
            .push((minute, remediation("awaiting_approval")));
        let incident = o.remediations[0].1.incident_id.clone().unwrap();
        assert_eq!(
            o.final_state(&incident).map(|(_, s)| s),
            Some(Outcome::State(IncidentState::AwaitingApproval))
        );
        o.records.push((
            2 * minute,
            golden::<IncidentRecord>(|v| v["payload"]["status"] = json!("cleared")),
        ));
        // The remediator does not read incident records: its proposal expires an hour on and
        // it escalates. The incident had already ended when the sender said so.
        o.remediations.push((62 * minute, remediation("escalated")));
        assert_eq!(
            o.final_state(&incident),
            Some((2 * minute, Outcome::Cleared))
        );
    }

    #[test]
    fn the_command_line_speed_overrides_the_scenario_s() {
        let slow = Scenario::parse("name: x\nspeed: 5\nexpect: {}\n", "x.yaml").unwrap();
        let plain = Scenario::parse("name: x\nexpect: {}\n", "x.yaml").unwrap();
        let mut a = args();
        assert_eq!(speed_for(&a, &slow), 400.0);
        a.speed = 0.0;
        assert_eq!(speed_for(&a, &slow), 5.0);
        assert_eq!(speed_for(&a, &plain), DEFAULT_SPEED);
        assert!(parse_speed("-1").is_err() && parse_speed("fast").is_err());
        assert_eq!(parse_speed("0"), Ok(0.0));
    }

    #[test]
    fn a_bad_file_is_a_failed_verdict_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "name: x\nexpect: {}\nsurprise: 1\n",
        )
        .unwrap();
        let files = scenario_files(dir.path()).unwrap();
        let e = Scenario::load(&files[0]).unwrap_err();
        let v = Verdict::failed(files[0].display().to_string(), e.to_string());
        assert!(!v.passed);
        assert!(v.error.unwrap().contains(":3"));
        assert!(scenario_files(Path::new("/nonexistent")).is_err());
    }
}
