//! `opsmesh demo`: the seed incidents (an OOM-looping model, a Kyverno denial, a GPU cost
//! spike) played through the cluster simulator and the whole mesh, exactly as `opsmesh
//! scenario run` plays them, each incident's timeline printed from what Splunk would index;
//! then the mesh stays up (console, APIs) until Ctrl-C.

use std::{path::Path, process::ExitCode, time::Duration};

use clap::Args;
use serde_json::Value;

use opsmesh_proto::Target;
use opsmesh_runtime::{launcher, telemetry};
use opsmesh_sim::scenario::Scenario;

use crate::harness::{Options, Verdict, run_one};

/// The seed incidents (also in `tests/scenarios/`).
const SEEDS: &[(&str, &str)] = &[
    (
        "oom-loop.yaml",
        include_str!("../../../../tests/scenarios/oom-loop.yaml"),
    ),
    (
        "policy-denial.yaml",
        include_str!("../../../../tests/scenarios/policy-denial.yaml"),
    ),
    (
        "cost-spike.yaml",
        include_str!("../../../../tests/scenarios/cost-spike.yaml"),
    ),
];

/// Where the HEC events of each incident are kept (relative to the working directory).
const HEC_DIR: &str = "opsmesh-demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit after the incidents instead of serving the mesh until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Wall-clock bound on each incident.
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

pub fn run(config: Option<&Path>, args: DemoArgs) -> ExitCode {
    let tree = match super::embedded_tree(config) {
        Ok(tree) => tree,
        Err(err) => return launcher::fail(&err),
    };
    if let Ok(settings) = tree.settings() {
        telemetry::init(&settings.log);
    }
    let out = std::path::PathBuf::from(HEC_DIR);
    let options = Options {
        speed: Some(200.0),
        timeout: Duration::from_secs(args.timeout.as_secs().max(1)),
        hec_out: Some(out.clone()),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!(
        "opsmesh demo: {} incidents through the cluster simulator and the mesh\n",
        SEEDS.len()
    );
    let mut all_played = true;
    for (file, text) in SEEDS {
        let scenario = match Scenario::parse(text, file) {
            Ok(scenario) => scenario,
            Err(err) => return launcher::fail(&err),
        };
        println!(
            "== {} — {}",
            scenario.name,
            scenario.description.as_deref().unwrap_or("")
        );
        let verdict = runtime.block_on(run_one(&scenario, config, &options));
        print_timeline(&out.join(format!("{}.hec.jsonl", scenario.name)));
        print_outcome(&verdict);
        all_played &= verdict.outcome.is_some();
    }
    drop(runtime);
    println!("HEC events (what Splunk indexes) are in ./{HEC_DIR}/<incident>.hec.jsonl");
    if !all_played {
        return launcher::fail(&"not every incident reached an outcome in time");
    }
    if args.once {
        return ExitCode::SUCCESS;
    }
    println!(
        "The mesh keeps running (in-memory bus) until Ctrl-C: `opsmesh up` with the same configuration."
    );
    launcher::run_to_exit(tree, crate::SERVICES.to_vec(), None)
}

fn print_outcome(verdict: &Verdict) {
    let actions: Vec<String> = verdict
        .actions
        .iter()
        .map(|a| format!("{} {}", a.kind, a.target))
        .collect();
    println!(
        "   outcome: {} after {} (virtual time); actions: {}; {} events written to HEC\n",
        verdict.outcome.as_deref().unwrap_or("none"),
        verdict.time_to_outcome.as_deref().unwrap_or("-"),
        if actions.is_empty() {
            "none".into()
        } else {
            actions.join(", ")
        },
        verdict.hec_events
    );
}

/// Prints the incident steps Splunk would show for `index=opsmesh incident_id=<id>`.
fn print_timeline(hec: &Path) {
    let text = std::fs::read_to_string(hec).unwrap_or_default();
    for event in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let payload = &event["event"]["payload"];
        let line = match event["sourcetype"].as_str().unwrap_or_default() {
            "opsmesh:alert" => format!(
                "alert      {:?} on {} ({})",
                payload["name"].as_str().unwrap_or_default(),
                target(&payload["entity"]),
                payload["source_kind"].as_str().unwrap_or_default()
            ),
            "opsmesh:diagnosis" => format!(
                "diagnosis  {} (confidence {:.2}, {} evidence, runbook {} / {:?}): {}",
                payload["root_cause"].as_str().unwrap_or_default(),
                payload["confidence"].as_f64().unwrap_or_default(),
                payload["evidence"].as_array().map_or(0, Vec::len),
                payload["runbook"]["id"].as_str().unwrap_or("-"),
                payload["runbook"]["section"].as_str().unwrap_or("-"),
                payload["summary"].as_str().unwrap_or_default()
            ),
            "opsmesh:remediation" => format!(
                "ledger #{:<2} {:<17} {}{}",
                payload["ledger"]["seq"].as_u64().unwrap_or_default(),
                payload["state"].as_str().unwrap_or_default(),
                payload["action"]["kind"]
                    .as_str()
                    .map(|k| format!(
                        "{k} {}: ",
                        payload["action"]["target"].as_str().unwrap_or_default()
                    ))
                    .unwrap_or_default(),
                payload["reason"].as_str().unwrap_or_default()
            ),
            _ => continue,
        };
        let time = event["event"]["occurred_at"].as_str().unwrap_or_default();
        println!("   {} {line}", time.get(11..23).unwrap_or(time));
    }
}

fn target(entity: &Value) -> String {
    let part = |k: &str| entity[k].as_str().unwrap_or_default().to_owned();
    match entity["kind"].as_str() {
        Some("namespace") => Target::Namespace(part("namespace")).to_string(),
        Some(kind) => Target::namespaced(kind, &part("namespace"), &part("name")).to_string(),
        None => part("namespace"),
    }
}
