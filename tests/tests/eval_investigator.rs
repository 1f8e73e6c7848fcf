//! `opsmesh eval --investigator` against the scripted investigator (an OpenAI-compatible
//! server playing incident_facts, the namespace's events and a report for any incident, with
//! usage counted like a real server's): the scenarios still pass, and the report gives each
//! scenario's investigations with the tokens the server reported, their steps, and their cost
//! at the configured prices.

use std::path::{Path, PathBuf};

use serde_json::Value;

use opsmesh_testkit::openai::ScriptedModel;

const KEY: &str = "sk-eval-investigator";
const KEY_VAR: &str = "OPSMESH_TEST_EVAL_LLM_KEY";
const PROMPT_PRICE: f64 = 2.5;
const COMPLETION_PRICE: f64 = 10.0;

/// Scenarios of tests/scenarios and the incidents each opens: a healthy control whose three
/// noisy alerts the rules find nothing behind, a crash loop that escalates, the public OOM
/// loop. The rules are sure of all three.
const SCENARIOS: [(&str, &str, u32); 3] = [
    (
        "healthy-control-noisy.yaml",
        "healthy-control-noisy-alerts",
        3,
    ),
    (
        "crash-loop-persistent-no-known-image.yaml",
        "crash-loop-persistent-no-known-image",
        1,
    ),
    ("public/oom-loop.yaml", "oom-loop-gpt-oss", 1),
];

/// An incident the rules cannot explain (root cause unknown, confidence 0): unsure at any
/// threshold.
const UNEXPLAINED: &str = "unexplained-alert-escalates";
const UNEXPLAINED_YAML: &str = r#"
name: unexplained-alert-escalates
description: An alert about a model the cluster does not run; no rule explains it, so humans are told.
state:
  namespaces:
    - name: ml-team-a
  inference_services:
    - namespace: ml-team-a
      name: embedder
      memory_limit: 1Gi
faults:
  - at: 0s
    kind: none
alerts:
  - at: 2m
    via: splunk_alert_action
    search_name: "KServe model error rate above 5%"
    rows:
      - {model_name: ghost-model, namespace: ml-team-a, error_rate: "0.2"}
expect:
  incidents: 1
  root_cause: unknown
  actions:
    - {kind: escalate}
  outcome: escalated
  within: 5m
"#;

/// A directory with the scenarios above (`files` of tests/scenarios, and the unexplained
/// alert), and a configuration with the model's prices.
fn workspace(files: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).unwrap();
    let source = opsmesh_tests::workspace_root().join("tests/scenarios");
    for file in files {
        let name = Path::new(file).file_name().unwrap();
        std::fs::copy(source.join(file), scenarios.join(name)).unwrap();
    }
    std::fs::write(scenarios.join("unexplained.yaml"), UNEXPLAINED_YAML).unwrap();
    let config = dir.path().join("opsmesh.toml");
    std::fs::write(
        &config,
        format!(
            "[diagnoser.llm]\nmodel = \"scripted-investigator\"\n\
             prompt_price_per_million_usd = {PROMPT_PRICE}\n\
             completion_price_per_million_usd = {COMPLETION_PRICE}\n"
        ),
    )
    .unwrap();
    (dir, scenarios, config)
}

/// Runs `opsmesh --config CONFIG eval DIR --investigator --llm-url URL ... EXTRA`, which must
/// succeed (every scenario passed); its standard output.
async fn eval(config: &Path, scenarios: &Path, url: &str, extra: &[&str]) -> String {
    let mut command = std::process::Command::new(opsmesh_tests::binary("opsmesh"));
    command
        .arg("--config")
        .arg(config)
        .arg("eval")
        .arg(scenarios)
        .args([
            "--investigator",
            "--llm-url",
            url,
            "--llm-api-key-env",
            KEY_VAR,
        ])
        .args(extra)
        .env(KEY_VAR, KEY)
        .env("OPSMESH__LOG__LEVEL", "error");
    // The scripted model is served by this test's runtime: wait for the process off it.
    let output = tokio::task::spawn_blocking(move || command.output().expect("opsmesh runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn cost(prompt: u64, completion: u64) -> f64 {
    (prompt as f64 * PROMPT_PRICE + completion as f64 * COMPLETION_PRICE) / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_incident_investigated_with_the_servers_tokens_steps_and_cost() {
    let model = ScriptedModel::investigator(KEY).await;
    let (_dir, scenarios, config) = workspace(&SCENARIOS.map(|(file, _, _)| file));
    let stdout = eval(
        &config,
        &scenarios,
        model.url(),
        &["--json", "--investigate-below", "1.0"],
    )
    .await;
    let report: Value = serde_json::from_str(&stdout).expect("the JSON report");
    let (mut prompt, mut completion) = (0, 0);
    let every = SCENARIOS.map(|(_, name, incidents)| (name, incidents));
    for (name, incidents) in every.into_iter().chain([(UNEXPLAINED, 1)]) {
        let scenario = report["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scenario"] == name)
            .unwrap_or_else(|| panic!("{name} not in {report:#}"));
        assert_eq!(scenario["misses"], serde_json::json!([]), "{scenario:#}");
        let i = &scenario["metrics"]["investigations"];
        // Every incident, each: incident_facts, kubernetes_events, the report - three model
        // calls and two tool calls, none refused.
        assert_eq!(i["investigations"], incidents, "{name}: {i:#}");
        assert_eq!(
            i["states"],
            serde_json::json!({"completed": incidents}),
            "{name}"
        );
        assert_eq!(i["steps"], 5 * incidents, "{name}");
        assert_eq!(i["tool_calls"], 2 * incidents, "{name}");
        assert_eq!(i["refused_calls"], 0, "{name}");
        let (p, c) = (
            i["prompt_tokens"].as_u64().unwrap(),
            i["completion_tokens"].as_u64().unwrap(),
        );
        assert!(p > 1000 * u64::from(incidents) && c > 50, "{name}: {i:#}");
        let charged = i["cost_usd"].as_f64().unwrap();
        assert!(
            (charged - cost(p, c)).abs() < 1e-9,
            "{name}: {charged} for {p} + {c}"
        );
        assert!(i["wall_time"]["seconds"].as_f64().unwrap() > 0.0, "{name}");
        prompt += p;
        completion += c;
    }
    let usage = model.usage();
    assert_eq!(usage.len(), 6 * 3, "one answer per model call");
    let served =
        |pick: fn(&(u32, u32)) -> u32| usage.iter().map(|u| u64::from(pick(u))).sum::<u64>();
    assert_eq!(prompt, served(|u| u.0));
    assert_eq!(completion, served(|u| u.1));
    let all = &report["aggregate"]["investigations"];
    assert_eq!(all["investigations"], 6);
    assert_eq!(all["prompt_tokens"], prompt);
    // The requests the model saw were the investigator's, with the tools it may use here.
    let first = &model.requests()[0];
    assert_eq!(first["model"], "scripted-investigator");
    let tools: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(
        tools.contains(&"kubernetes_events") && tools.contains(&"incident_facts"),
        "{tools:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unsure_incidents_are_investigated_and_the_table_says_so() {
    let model = ScriptedModel::investigator(KEY).await;
    let (_dir, scenarios, config) = workspace(&["public/oom-loop.yaml"]);
    let table = eval(&config, &scenarios, model.url(), &[]).await;
    // scenario, inv, states..., steps, tools, refused, prompt, completion, cost, wall
    let row = |name: &str| {
        table
            .lines()
            .skip_while(|l| !l.starts_with("investigations:"))
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no investigations row for {name}:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let sure = row("oom-loop-gpt-oss");
    assert_eq!(sure[1..5], ["0", "-", "0", "0"], "{table}");
    let unsure = row(UNEXPLAINED);
    assert_eq!(
        unsure[1..7],
        ["1", "completed", "1", "5", "2", "0"],
        "{table}"
    );
    let usage = model.usage();
    assert_eq!(usage.len(), 3, "{table}");
    let prompt: u32 = usage.iter().map(|u| u.0).sum();
    let completion: u32 = usage.iter().map(|u| u.1).sum();
    assert_eq!(
        unsure[7..9],
        [prompt.to_string(), completion.to_string()],
        "{table}"
    );
    assert_eq!(
        unsure[9],
        format!("{:.5}", cost(prompt.into(), completion.into())),
        "{table}"
    );
    assert!(
        table.contains("  investigations               1 (completed 1)"),
        "{table}"
    );
}
