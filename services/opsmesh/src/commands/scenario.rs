//! `opsmesh scenario run FILE|DIR`: a scenario through the whole mesh in one process, against
//! the cluster simulator, under a virtual clock; prints the verdict JSON. The playing and
//! judging are the library's [`harness`](crate::harness).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Subcommand};

use opsmesh_runtime::{ConfigTree, launcher, telemetry};
use opsmesh_sim::Scenario;

use crate::harness::{Options, Verdict, run_one, scenario_files};

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Run a scenario file (or every *.yaml in a directory) and print the verdict JSON.
    ///
    /// Exit status 0 only when every check of every scenario passed.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A scenario file, or a directory of them (subdirectories included).
    pub path: PathBuf,
    /// Print only JSON: the verdict for a file, an array of verdicts for a directory.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub play: PlayArgs,
}

/// How scenarios are played (`opsmesh scenario run` and `opsmesh eval`).
#[derive(Debug, Args)]
pub struct PlayArgs {
    /// Virtual seconds the clock advances per wall-clock second while waiting for outcomes
    /// [default: the scenario's `speed`, else 200].
    ///
    /// Overrides every scenario's `speed`; 0 leaves it to them.
    #[arg(long, default_value_t = 0.0, hide_default_value = true, value_parser = parse_speed)]
    pub speed: f64,
    /// Wall-clock bound on one scenario.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    pub timeout: u64,
    /// The longest the virtual clock waits, per step, for the mesh to take up what was
    /// published before it moves on anyway.
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = parse_seconds)]
    pub mesh_wait: f64,
    /// Copy each scenario's HEC events (what Splunk would index) to DIR/<scenario>.hec.jsonl.
    #[arg(long, value_name = "DIR")]
    pub hec_out: Option<PathBuf>,
}

impl PlayArgs {
    /// The harness options these arguments ask for (`--speed 0`: each scenario's own).
    pub fn options(&self) -> Options {
        Options {
            speed: (self.speed > 0.0).then_some(self.speed),
            timeout: Duration::from_secs(self.timeout),
            mesh_wait: Duration::from_secs_f64(self.mesh_wait),
            hec_out: self.hec_out.clone(),
            investigator: None,
        }
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

fn parse_speed(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a number of virtual seconds per real second"))
}

/// Logging for played scenarios: warnings only, unless the configuration says otherwise.
pub fn quiet_logging(config: Option<&Path>) -> Result<(), ExitCode> {
    let probe = ConfigTree::load_layered(
        Some("[log]\nlevel = \"warn\"\n[bus]\nkind = \"memory\"\n"),
        config,
        std::env::vars(),
    )
    .map_err(|e| launcher::fail(&e))?;
    let settings = probe.settings().map_err(|e| launcher::fail(&e))?;
    telemetry::init(&settings.log);
    Ok(())
}

pub fn run(config: Option<&Path>, command: ScenarioCommand) -> ExitCode {
    let ScenarioCommand::Run(args) = command;
    let files = match scenario_files(&args.path) {
        Ok(f) => f,
        Err(e) => return launcher::fail(&e),
    };
    let is_dir = args.path.is_dir();
    if let Err(code) = quiet_logging(config) {
        return code;
    }
    let options = args.play.options();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let verdicts: Vec<Verdict> = runtime.block_on(async {
        let mut out = Vec::new();
        for file in &files {
            let verdict = match Scenario::load(file) {
                Err(e) => Verdict::failed(file.display().to_string(), e.to_string()),
                Ok(scenario) => run_one(&scenario, config, &options).await,
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
            println!(
                "{:<40} {:<6} {:<18} {:<10} {}",
                v.scenario,
                if v.passed { "PASS" } else { "FAIL" },
                v.outcome.as_deref().unwrap_or("-"),
                v.time_to_outcome.as_deref().unwrap_or("-"),
                v.failure()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_speed_overrides_the_scenario_s() {
        assert!(parse_speed("-1").is_err() && parse_speed("fast").is_err());
        assert_eq!(parse_speed("0"), Ok(0.0));
        let args = |speed| PlayArgs {
            speed,
            timeout: 60,
            mesh_wait: 5.0,
            hec_out: None,
        };
        assert!(parse_seconds("0").is_err() && parse_seconds("0.5").is_ok());
        assert_eq!(args(400.0).options().speed, Some(400.0));
        assert_eq!(args(0.0).options().speed, None);
    }
}
