//! `opsmesh eval DIR [--json] [--runs N]`: plays every scenario N times through the whole
//! mesh (as `opsmesh scenario run` does) and scores the runs with the metrics of AIOpsLab and
//! ITBench, per scenario and over all of them (README "Evaluation"). Exit status 0 only when
//! every run of every scenario passed and each scenario gave the same verdict every time.

use std::{path::Path, path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;

use opsmesh_runtime::launcher;
use opsmesh_sim::{Scenario, duration::format_duration};

use crate::{
    commands::scenario::{PlayArgs, quiet_logging},
    harness::{Mean, Metrics, Ratio, Report, Verdict, run_one, scenario_files, score},
};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A directory of scenario files (subdirectories included), or one file.
    pub path: PathBuf,
    /// Print only the JSON report.
    #[arg(long)]
    pub json: bool,
    /// Play each scenario this many times; every run must give the same verdict.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    #[command(flatten)]
    pub play: PlayArgs,
}

pub fn run(config: Option<&Path>, args: EvalArgs) -> ExitCode {
    let files = match scenario_files(&args.path) {
        Ok(f) => f,
        Err(e) => return launcher::fail(&e),
    };
    if let Err(code) = quiet_logging(config) {
        return code;
    }
    let options = args.play.options();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let scores = runtime.block_on(async {
        let mut scores = Vec::new();
        for file in &files {
            let name = file.display().to_string();
            let score = match Scenario::load(file) {
                Err(e) => score(None, &name, &[Verdict::failed(name.clone(), e.to_string())]),
                Ok(scenario) => {
                    let mut runs = Vec::new();
                    for _ in 0..args.runs {
                        runs.push(run_one(&scenario, config, &options).await);
                    }
                    score(Some(&scenario), &name, &runs)
                }
            };
            if !args.json {
                eprintln!(
                    "played {} ({} of {} runs passed{})",
                    score.scenario,
                    score.metrics.passed.hits,
                    score.metrics.runs,
                    if score.stable {
                        ""
                    } else {
                        ", verdicts differ"
                    }
                );
            }
            scores.push(score);
        }
        scores
    });
    let report = Report::new(args.runs, scores);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialize")
        );
    } else {
        print!("{}", table(&report));
    }
    if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The report as a table per scenario, the aggregate and the misses.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "{:<40} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>8} {:>8} {:>4} {:>7} {:>8}\n",
        "scenario",
        "pass",
        "det",
        "loc",
        "rca",
        "mit",
        "frem",
        "esc",
        "ttd",
        "ttm",
        "act",
        "tokens",
        "cost$"
    );
    for s in &report.scenarios {
        let m = &s.metrics;
        let name = if s.stable {
            s.scenario.clone()
        } else {
            format!("{} (unstable)", s.scenario)
        };
        out.push_str(&format!(
            "{:<40} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>8} {:>8} {:>4} {:>7} {:>8.4}\n",
            name,
            fraction(m.passed),
            fraction(m.detection),
            fraction(m.localisation),
            fraction(m.root_cause),
            fraction(m.mitigation),
            fraction(m.false_remediation),
            fraction(m.escalation),
            duration(m.time_to_diagnosis),
            duration(m.time_to_mitigation),
            m.actions,
            m.llm_tokens,
            m.llm_cost_usd
        ));
    }
    out.push_str(&aggregate(
        report.scenarios.len(),
        report.runs_per_scenario,
        &report.aggregate,
    ));
    let misses: Vec<String> = report
        .scenarios
        .iter()
        .flat_map(|s| {
            s.misses
                .iter()
                .map(move |m| format!("  {}: {m}", s.scenario))
        })
        .chain(
            report
                .scenarios
                .iter()
                .filter(|s| !s.stable)
                .map(|s| format!("  {}: the runs gave different verdicts", s.scenario)),
        )
        .collect();
    if misses.is_empty() {
        out.push_str("no misses\n");
    } else {
        out.push_str(&format!("misses:\n{}\n", misses.join("\n")));
    }
    out
}

fn aggregate(scenarios: usize, runs: u32, m: &Metrics) -> String {
    let line = |name: &str, value: String| format!("  {name:<28} {value}\n");
    let mut out = format!("\nall {scenarios} scenarios, {runs} run(s) each:\n");
    for (name, ratio) in [
        ("scenarios passed", m.passed),
        ("detection accuracy", m.detection),
        ("localisation accuracy", m.localisation),
        ("root-cause accuracy", m.root_cause),
        ("mitigation success rate", m.mitigation),
        ("false-remediation rate", m.false_remediation),
        ("escalation rate", m.escalation),
    ] {
        let value = match ratio.rate() {
            Some(rate) => format!("{:.1}% ({})", rate * 100.0, fraction(ratio)),
            None => "- (applies to none)".into(),
        };
        out.push_str(&line(name, value));
    }
    out.push_str(&line(
        "mean time to diagnosis",
        duration(m.time_to_diagnosis),
    ));
    out.push_str(&line(
        "mean time to mitigation",
        duration(m.time_to_mitigation),
    ));
    out.push_str(&line("actions taken", m.actions.to_string()));
    out.push_str(&line(
        "LLM tokens / cost",
        format!("{} / ${:.4}", m.llm_tokens, m.llm_cost_usd),
    ));
    out
}

fn fraction(r: Ratio) -> String {
    if r.of == 0 {
        "-".into()
    } else {
        format!("{}/{}", r.hits, r.of)
    }
}

fn duration(m: Mean) -> String {
    m.seconds
        .map_or("-".into(), |s| format_duration(Duration::from_secs_f64(s)))
}
