//! Every scenario in `tests/scenarios/` passes through the simulator and the whole mesh.

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
    assert!(verdicts.len() >= 10, "{} verdicts", verdicts.len());
    assert!(output.status.success());
}
