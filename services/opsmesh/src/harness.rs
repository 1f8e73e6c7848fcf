//! The scenario harness: plays a scenario (cluster state, faults, alerts as Splunk or
//! Alertmanager send them) through the whole mesh in one process, against the cluster
//! simulator under a virtual clock, and judges the outcome. `opsmesh scenario run`, `opsmesh
//! demo` and the tests use it.
//!
//! This module plays; the files a run needs, the alert deliveries, what is observed on the
//! bus, the judging and the verdict each have a submodule.

mod deliver;
mod files;
mod investigations;
mod judge;
mod observe;
mod pace;
mod score;
#[cfg(test)]
mod tests;
mod verdict;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use opsmesh_proto::alert::AlertStatus;
use opsmesh_runtime::{Bus, ConfigTree, bus::MemoryBus, launcher};
use opsmesh_sim::{Scenario, SimConfig, SimServer, Simulator};

pub use investigations::{InvestigationFigures, InvestigationSeen, InvestigatorRun};
pub use score::{Mean, Metrics, Ratio, Report, ScenarioScore, score};
pub use verdict::{ActionSeen, Check, IncidentSeen, Verdict};

use deliver::{deliver, schedule};
use files::prepare;
use investigations::wait_for_investigations;
use judge::judge;
use observe::{Observed, WATCHED, watch};
use pace::Pacer;

/// Virtual seconds per real second when neither the options nor the scenario say.
pub const DEFAULT_SPEED: f64 = 200.0;

/// How long, by default, the clock waits per step for the mesh (see [`Options::mesh_wait`]).
pub const DEFAULT_MESH_WAIT: Duration = Duration::from_secs(5);

/// The alert source the harness configures on the receiver.
const SOURCE: &str = "scenario";
/// The harness's own consumer group on the bus.
const RUNNER_GROUP: &str = "opsmesh-scenario-runner";
/// Virtual step while waiting for outcomes, and the real pause that goes with it.
const STEP: Duration = Duration::from_secs(5);
const DEFAULT_WITHIN: Duration = Duration::from_secs(600);

/// How scenarios are played.
#[derive(Debug, Clone)]
pub struct Options {
    /// Virtual seconds the clock advances per wall-clock second while waiting for outcomes,
    /// overriding the scenario's `speed` (`None`: the scenario's, else [`DEFAULT_SPEED`]).
    pub speed: Option<f64>,
    /// Wall-clock bound on one scenario.
    pub timeout: Duration,
    /// The longest the virtual clock waits, per step, for the mesh to take up what was
    /// published (see [`pace`]).
    pub mesh_wait: Duration,
    /// Copy each scenario's HEC events (what Splunk would index) to DIR/<scenario>.hec.jsonl.
    pub hec_out: Option<PathBuf>,
    /// Turn the diagnoser's investigator on (`None`: as the configuration says).
    pub investigator: Option<InvestigatorRun>,
}

/// The speed one scenario runs at: the options', else its own `speed`, else the default.
fn speed_for(options: &Options, scenario: &Scenario) -> f64 {
    options
        .speed
        .filter(|speed| *speed > 0.0)
        .unwrap_or_else(|| scenario.speed.unwrap_or(DEFAULT_SPEED))
}

/// The scenario files at `path`: the file itself, or every `*.yaml` / `*.yml` in a directory
/// and its subdirectories (`tests/scenarios/public/`), sorted by path.
pub fn scenario_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let mut files = Vec::new();
        collect_yaml(path, &mut files)?;
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

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        // Not through symbolic links: a link to a parent would never end.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_yaml(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    Ok(())
}

/// Runs one scenario end to end and judges it.
pub async fn run_one(scenario: &Scenario, config: Option<&Path>, options: &Options) -> Verdict {
    match tokio::time::timeout(options.timeout, play(scenario, config, options)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Verdict::failed(scenario.name.clone(), e),
        Err(_) => Verdict::failed(
            scenario.name.clone(),
            format!(
                "did not finish within {} s (--timeout)",
                options.timeout.as_secs()
            ),
        ),
    }
}

async fn play(
    scenario: &Scenario,
    config: Option<&Path>,
    options: &Options,
) -> Result<Verdict, String> {
    let sim = Simulator::from_scenario(scenario, SimConfig::default());
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().expect("address"))
        .map_err(|e| format!("starting the simulator: {e}"))?;
    let files = prepare(scenario, &server).map_err(|e| format!("preparing files: {e}"))?;
    let probe = ConfigTree::load(config).map_err(|e| e.to_string())?;
    let defaults = files.toml.clone() + &crate::keys::embedded(&probe, false)?;
    let overrides = match &options.investigator {
        Some(run) => run.overrides(&probe, files.dir.path())?,
        None => Vec::new(),
    };
    let tree = ConfigTree::load_layered(Some(&defaults), config, std::env::vars().chain(overrides))
        .map_err(|e| e.to_string())?;
    let settings = tree.settings().map_err(|e| e.to_string())?;
    let investigator = tree
        .section::<opsmesh_diagnoser::DiagnoserConfig>("diagnoser")
        .map_err(|e| e.to_string())?
        .investigator;
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
    let remediator_group = format!(
        "{}{}",
        settings.bus.group_prefix,
        opsmesh_remediator::SERVICE.name
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
        .subscribe(RUNNER_GROUP, &WATCHED)
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
    let pacer = Pacer {
        sim: sim.clone(),
        bus: bus.clone(),
        seen: seen.clone(),
        groups: vec![diagnoser_group.clone(), RUNNER_GROUP.to_owned()],
        pause: Duration::from_secs_f64(STEP.as_secs_f64() / speed_for(options, scenario)),
        mesh_wait: options.mesh_wait,
    };
    let mut first_alert: Option<Duration> = None;
    let mut last_fresh = Duration::ZERO;
    let mut failure = None;
    // When each alert (by name and labels) began firing, for the `startsAt` of its resolution.
    let mut firing_since: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        std::collections::HashMap::new();
    pacer.fresh_telemetry().await;
    for (at, index, n) in &plan {
        // Time passes towards the next alert as it would for a live mesh: step by step while
        // incidents are still being handled, so an alert forty virtual minutes later finds the
        // earlier incident closed (a recurrence), not still open. Once everything settled
        // nothing moves, and the clock jumps.
        while sim.elapsed() + STEP <= *at && !seen.lock().expect("observed lock").settled() {
            pacer.step(STEP).await;
        }
        sim.advance_to(*at);
        if *at > last_fresh + Duration::from_secs(30) {
            // The collector sees the cluster as it is now before Splunk would alert.
            pacer.fresh_telemetry().await;
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
        pacer.settle().await;
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
            pacer.step(STEP).await;
        }
        // Late records (verification, follow-up actions) without moving the clock much.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The investigations the scenario queued run in the background while the clock moves (a
    // remediation's verification needs it to); the run ends once they have reported, each
    // bounded by its wall-time limit, and the remediator has taken the reports up. The clock
    // stays put meanwhile: everything else settled.
    wait_for_investigations(
        &seen,
        &bus,
        [&remediator_group, RUNNER_GROUP],
        investigator.limits.max_wall_time,
        options.mesh_wait,
    )
    .await;
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
    if let Some(dir) = &options.hec_out {
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
    let mut verdict = judge(scenario, &observed, &sim, start, outcome_at, hec_events);
    if investigator.enabled {
        verdict.investigations = Some(observed.investigations.iter().map(|t| t.seen()).collect());
    }
    Ok(verdict)
}
