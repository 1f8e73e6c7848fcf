//! `opsmesh eval DIR [--json] [--runs N]`: plays every scenario N times through the whole
//! mesh (as `opsmesh scenario run` does) and scores the runs with the metrics of AIOpsLab and
//! ITBench, per scenario and over all of them (README "Evaluation"). Exit status 0 only when
//! every run of every scenario passed and each scenario gave the same verdict every time.
//! With `--investigator` the diagnoser's investigator runs too, and its investigations are
//! reported beside; the verdicts judge the mesh with it (the remediator plans a report's
//! proposals for an incident the rules escalated, to wait for a human).

use std::{path::Path, path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;

use opsmesh_runtime::launcher;
use opsmesh_sim::{Scenario, duration::format_duration};

use crate::{
    commands::scenario::{PlayArgs, quiet_logging},
    harness::{
        InvestigationFigures, InvestigatorRun, Mean, Metrics, Ratio, Report, Verdict, run_one,
        scenario_files, score,
    },
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
    #[command(flatten)]
    pub investigator: InvestigatorArgs,
}

/// The diagnoser's investigator in the evaluation.
#[derive(Debug, Args)]
pub struct InvestigatorArgs {
    /// Run the diagnoser's investigator for every incident the rules are unsure about, and
    /// report its investigations (states, steps, tool calls, tokens, cost, wall time).
    ///
    /// Its Kubernetes and OpenCost reads go to the simulated cluster, in the namespaces the
    /// scenario declares; the model, its prices ([diagnoser.llm]) and the investigator's
    /// limits ([diagnoser.investigator.limits]) come from --config unless the options below
    /// say otherwise. Each scenario's run waits for its investigations to report (each at
    /// most limits.max_wall_time): with a slow model, raise --timeout.
    #[arg(long)]
    pub investigator: bool,
    /// The model's OpenAI-compatible API base, e.g. http://localhost:11434/v1 (Ollama) or
    /// http://localhost:8000/v1 (vLLM) [default: [diagnoser.llm] base_url].
    #[arg(long, value_name = "URL", requires = "investigator", value_parser = parse_url)]
    pub llm_url: Option<String>,
    /// The model name the endpoint serves, e.g. qwen2.5:7b [default: [diagnoser.llm] model].
    #[arg(long, value_name = "MODEL", requires = "investigator")]
    pub llm_model: Option<String>,
    /// The environment variable holding the API key. Without it, and without api_key_env or
    /// api_key_file in [diagnoser.llm], no key is sent (local servers take none).
    #[arg(long, value_name = "VAR", requires = "investigator")]
    pub llm_api_key_env: Option<String>,
    /// Investigate incidents whose rule confidence is below this (or whose root cause is
    /// unknown); 1.0 investigates every incident [default: [diagnoser.investigator]
    /// below_confidence, 0.6].
    #[arg(long, value_name = "CONFIDENCE", requires = "investigator", value_parser = parse_confidence)]
    pub investigate_below: Option<f64>,
}

impl InvestigatorArgs {
    /// The harness's investigator settings (`None`: off unless the configuration turns it on).
    fn run(&self) -> Result<Option<InvestigatorRun>, String> {
        if !self.investigator {
            return Ok(None);
        }
        if let Some(var) = &self.llm_api_key_env
            && std::env::var_os(var).is_none()
        {
            return Err(format!(
                "--llm-api-key-env: environment variable {var} is not set"
            ));
        }
        Ok(Some(InvestigatorRun {
            llm_url: self.llm_url.clone(),
            llm_model: self.llm_model.clone(),
            llm_api_key_env: self.llm_api_key_env.clone(),
            below_confidence: self.investigate_below,
        }))
    }
}

fn parse_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not an http(s) URL"))
    }
}

fn parse_confidence(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|c| (0.0..=1.0).contains(c))
        .ok_or_else(|| format!("{text:?} is not a confidence between 0.0 and 1.0"))
}

pub fn run(config: Option<&Path>, args: EvalArgs) -> ExitCode {
    let files = match scenario_files(&args.path) {
        Ok(f) => f,
        Err(e) => return launcher::fail(&e),
    };
    if let Err(code) = quiet_logging(config) {
        return code;
    }
    let mut options = args.play.options();
    options.investigator = match args.investigator.run() {
        Ok(run) => run,
        Err(e) => return launcher::fail(&e),
    };
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
    if let Some(all) = &report.aggregate.investigations {
        out.push_str(&investigations(report, all));
    }
    out
}

/// The investigator's figures per scenario and over all of them.
fn investigations(report: &Report, all: &InvestigationFigures) -> String {
    let mut out = format!(
        "\ninvestigations:\n{:<40} {:>4} {:<24} {:>5} {:>5} {:>7} {:>8} {:>8} {:>9} {:>7}\n",
        "scenario",
        "inv",
        "states",
        "steps",
        "tools",
        "refused",
        "prompt",
        "complet",
        "cost$",
        "wall"
    );
    for s in &report.scenarios {
        let Some(i) = &s.metrics.investigations else {
            continue;
        };
        out.push_str(&format!(
            "{:<40} {:>4} {:<24} {:>5} {:>5} {:>7} {:>8} {:>8} {:>9.5} {:>7}\n",
            s.scenario,
            i.investigations,
            states(i),
            i.steps,
            i.tool_calls,
            i.refused_calls,
            i.prompt_tokens,
            i.completion_tokens,
            i.cost_usd,
            wall(i.wall_time)
        ));
    }
    let line = |name: &str, value: String| format!("  {name:<28} {value}\n");
    out.push_str(&line(
        "investigations",
        format!("{} ({})", all.investigations, states(all)),
    ));
    if all.investigations > 0 {
        let n = f64::from(all.investigations);
        let per = |total: u64| total as f64 / n;
        out.push_str(&line(
            "per investigation",
            format!(
                "{:.1} steps ({:.1} tool calls, {:.1} refused), {:.0} prompt + {:.0} completion \
                 tokens, ${:.5}, {} wall",
                per(all.steps),
                per(all.tool_calls),
                per(all.refused_calls),
                per(all.prompt_tokens),
                per(all.completion_tokens),
                all.cost_usd / n,
                wall(all.wall_time)
            ),
        ));
    }
    out
}

fn states(i: &InvestigationFigures) -> String {
    if i.states.is_empty() {
        return "-".into();
    }
    i.states
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn wall(m: Mean) -> String {
    m.seconds.map_or("-".into(), |s| format!("{s:.2}s"))
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
