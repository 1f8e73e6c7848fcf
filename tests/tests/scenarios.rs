//! Every scenario in `tests/scenarios/` passes through the simulator and the whole mesh: the
//! upstream public files in `public/`, unmodified, and the project's own beside them.

#[test]
fn every_public_and_project_scenario_passes() {
    let dir = opsmesh_tests::workspace_root().join("tests/scenarios");
    let output = std::process::Command::new(opsmesh_tests::binary("opsmesh"))
        .args(["scenario", "run", "--json"])
        .arg(&dir)
        .env("OPSMESH__LOG__LEVEL", "warn")
        .output()
        .expect("opsmesh runs");
    let verdicts: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("a JSON array of verdicts");
    let failed: Vec<&serde_json::Value> = verdicts.iter().filter(|v| v["passed"] != true).collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
    let played: Vec<&str> = verdicts
        .iter()
        .filter_map(|v| v["scenario"].as_str())
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
    assert!(verdicts.len() >= 14, "{} verdicts", verdicts.len());
    assert!(output.status.success());
}
