//! `opsmesh eval tests/scenarios` has no miss: every scenario passes through the simulator
//! and the whole mesh (the upstream public files in `public/`, unmodified, and the project's
//! own beside them), and the report scores them. `scripts/test.sh` runs the command itself
//! (its table goes to the log) and skips this test, so CI plays every scenario once.

#[test]
fn eval_over_every_scenario_has_no_miss() {
    let dir = opsmesh_tests::workspace_root().join("tests/scenarios");
    let output = std::process::Command::new(opsmesh_tests::binary("opsmesh"))
        .args(["eval", "--json"])
        .arg(&dir)
        .env("OPSMESH__LOG__LEVEL", "warn")
        .output()
        .expect("opsmesh runs");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the JSON report");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let missed: Vec<&serde_json::Value> = scenarios
        .iter()
        .filter(|s| s["misses"] != serde_json::json!([]) || s["stable"] != true)
        .collect();
    assert!(missed.is_empty(), "missed: {missed:#?}");
    let played: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    // The public set as published: no allow-list, so `mode: auto` acts in the namespaces
    // the scenario's cluster declares.
    for public in [
        "alert-storm-one-incident",
        "approval-gate-holds-action",
        "cost-spike-gpu-scale-out",
        "gitops-drift-sync",
        "healthy-control-transient-blip",
        "image-pull-error-rollback",
        "oom-loop-gpt-oss",
        "policy-denial-root-container",
    ] {
        assert!(played.contains(&public), "{public} not played: {played:?}");
    }
    assert!(scenarios.len() >= 14, "{} scenarios", scenarios.len());
    let all = &report["aggregate"];
    assert_eq!(all["passed"]["hits"], all["passed"]["of"], "{all}");
    assert_eq!(all["false_remediation"]["hits"], 0, "{all}");
    assert!(all["detection"]["of"].as_u64() >= Some(14), "{all}");
    assert!(output.status.success());
}
