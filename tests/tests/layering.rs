//! The workspace's layering, read from `cargo metadata`: proto → runtime / runbooks / sim →
//! the five services → the CLI. Services talk only over Kafka, so no service crate may depend
//! on another; the test kit is for tests only.

use std::process::Command;

use serde_json::{Value, json};

/// Every workspace crate and its layer: a crate may depend only on crates of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("opsmesh-proto", 0),
    ("opsmesh-runtime", 1),
    ("opsmesh-runbooks", 1),
    ("opsmesh-sim", 1),
    ("opsmesh-testkit", 1),
    ("opsmesh-collector", 2),
    ("opsmesh-alert-receiver", 2),
    ("opsmesh-diagnoser", 2),
    ("opsmesh-remediator", 2),
    ("opsmesh-reporter", 2),
    ("opsmesh", 3),
    ("opsmesh-tests", 4),
];

/// Crates only tests may depend on.
const TEST_ONLY: &[&str] = &["opsmesh-testkit"];

fn layer(name: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// What breaks the layering in `metadata` (the JSON of `cargo metadata --no-deps`).
fn violations(metadata: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(own) = layer(name) else {
            found.push(format!(
                "{name} is not placed in a layer (add it to LAYERS)"
            ));
            continue;
        };
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let dep = dependency["name"].as_str().unwrap_or_default();
            let Some(theirs) = layer(dep) else { continue };
            let kind = dependency["kind"].as_str().unwrap_or("normal");
            if theirs >= own && name != "opsmesh-tests" {
                found.push(format!(
                    "{name} depends on {dep} ({kind}): not a lower layer"
                ));
            }
            if TEST_ONLY.contains(&dep) && kind != "dev" && name != "opsmesh-tests" {
                found.push(format!("{name} depends on the test-only {dep} ({kind})"));
            }
        }
    }
    found
}

#[test]
fn no_crate_depends_on_its_own_layer_or_above() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    assert!(
        metadata["packages"].as_array().map_or(0, Vec::len) >= LAYERS.len(),
        "every crate was listed"
    );
    assert_eq!(violations(&metadata), Vec::<String>::new());
}

#[test]
fn a_service_importing_another_service_is_caught() {
    let metadata = json!({"packages": [
        {"name": "opsmesh-reporter", "dependencies": [
            {"name": "opsmesh-diagnoser", "kind": null},
            {"name": "opsmesh-testkit", "kind": null},
            {"name": "serde", "kind": null}
        ]},
        {"name": "opsmesh-newcomer", "dependencies": []}
    ]});
    assert_eq!(
        violations(&metadata),
        vec![
            "opsmesh-reporter depends on opsmesh-diagnoser (normal): not a lower layer",
            "opsmesh-reporter depends on the test-only opsmesh-testkit (normal)",
            "opsmesh-newcomer is not placed in a layer (add it to LAYERS)",
        ]
    );
}
