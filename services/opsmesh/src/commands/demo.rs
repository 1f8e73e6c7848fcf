//! `opsmesh demo`: the seed incidents (an OOM-looping model, a Kyverno denial, a GPU cost
//! spike) played through the cluster simulator and the whole mesh, exactly as `opsmesh
//! scenario run` plays them, each incident's timeline printed from what Splunk would index;
//! then the operator console keeps serving the played incidents until Ctrl-C, opened by a
//! one-time sign-in link.

mod console;
mod print;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
    time::Duration,
};

use clap::Args;

use opsmesh_runtime::{launcher, telemetry};
use opsmesh_sim::scenario::Scenario;

use crate::harness::{DEFAULT_MESH_WAIT, Options, run_one};

use print::Style;

/// The seed incidents (the public scenarios of `tests/scenarios/public/`).
const SEEDS: &[(&str, &str)] = &[
    (
        "oom-loop.yaml",
        include_str!("../../../../tests/scenarios/public/oom-loop.yaml"),
    ),
    (
        "policy-denial.yaml",
        include_str!("../../../../tests/scenarios/public/policy-denial.yaml"),
    ),
    (
        "cost-spike.yaml",
        include_str!("../../../../tests/scenarios/public/cost-spike.yaml"),
    ),
];

/// Where the demo keeps what it writes: each incident's HEC events, the service log, the
/// console's sign-in link (relative to the working directory).
const DEMO_DIR: &str = "opsmesh-demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit after the incidents instead of serving the console until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Wall-clock bound on each incident (e.g. 500ms, 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Service logs on stderr instead of opsmesh-demo/opsmesh.log.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(config: Option<&Path>, args: DemoArgs) -> ExitCode {
    let out = PathBuf::from(DEMO_DIR);
    if let Err(err) = std::fs::create_dir_all(&out) {
        return launcher::fail(&format!("creating ./{DEMO_DIR}: {err}"));
    }
    let link = match console::SigninLink::create(&out) {
        Ok(link) => link,
        Err(err) => return launcher::fail(&format!("writing the console sign-in link: {err}")),
    };
    // The console's configuration is checked before anything is played.
    let tree = match console::tree(config, &link, &out.join("console.hec.jsonl")) {
        Ok(tree) => tree,
        Err(err) => return launcher::fail(&err),
    };
    let log = out.join("opsmesh.log");
    let logs_to = match log_to(&tree, &log, args.verbose) {
        Ok(place) => place,
        Err(err) => return launcher::fail(&format!("{}: {err}", log.display())),
    };
    let style = Style::detect();
    let options = Options {
        speed: Some(200.0),
        timeout: Duration::from_secs(args.timeout.as_secs().max(1)),
        mesh_wait: DEFAULT_MESH_WAIT,
        hec_out: Some(out.clone()),
        investigator: None,
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!(
        "{} {} incidents through the cluster simulator and the mesh (service logs: {logs_to})\n",
        style.bold("opsmesh demo:"),
        SEEDS.len()
    );
    let mut all_played = true;
    let mut hec_files = Vec::new();
    let mut searches = Vec::new();
    for (file, text) in SEEDS {
        let scenario = match Scenario::parse(text, file) {
            Ok(scenario) => scenario,
            Err(err) => return launcher::fail(&err),
        };
        println!(
            "{}",
            style.bold(&format!(
                "== {} — {}",
                scenario.name,
                scenario.description.as_deref().unwrap_or("")
            ))
        );
        let verdict = runtime.block_on(run_one(&scenario, config, &options));
        let hec = out.join(format!("{}.hec.jsonl", scenario.name));
        let events = print::read_events(&hec);
        print::timeline(style, &events);
        print::outcome(style, &verdict);
        for incident in print::incident_ids(&events) {
            println!("   incident {incident}");
            searches.push(print::spl(&events, &incident));
        }
        println!();
        hec_files.push(hec);
        all_played &= verdict.outcome.is_some();
    }
    println!("HEC events (what Splunk indexes) are in ./{DEMO_DIR}/<incident>.hec.jsonl");
    println!("Each incident in Splunk:");
    for search in &searches {
        println!("   {search}");
    }
    if !all_played {
        return launcher::fail(&"not every incident reached an outcome in time");
    }
    if args.once {
        return ExitCode::SUCCESS;
    }
    let served = runtime.block_on(console::serve(&tree, &hec_files, &link, |url, admin| {
        println!(
            "\nThe console serves these incidents (read only) until Ctrl-C. Sign in once with:\n   {}",
            style.bold(url)
        );
        println!("Health at a glance: opsmesh status --url http://{admin}");
    }));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => launcher::fail(&err),
    }
}

/// Sends the service logs to stderr (`verbose`) or to `file`; says where.
fn log_to(
    tree: &opsmesh_runtime::ConfigTree,
    file: &Path,
    verbose: bool,
) -> Result<String, String> {
    let settings = tree.settings().map_err(|e| e.to_string())?;
    if verbose {
        telemetry::init(&settings.log);
        return Ok("stderr".into());
    }
    let log = std::fs::File::create(file).map_err(|e| e.to_string())?;
    telemetry::init_to(&settings.log, Mutex::new(log), false);
    Ok(file.display().to_string())
}
