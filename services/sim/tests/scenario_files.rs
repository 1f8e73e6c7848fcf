//! Scenario files: every public scenario loads; bad files give a clear error naming the key
//! and line, never a panic.

use std::path::Path;

use opsmesh_sim::{Scenario, SimConfig, Simulator};

fn scenarios_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../tests/scenarios")
}

#[test]
fn every_scenario_in_the_repository_loads_and_seeds() {
    let mut n = 0;
    let dir = scenarios_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("public")).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let sim = Simulator::from_scenario(&s, SimConfig::default());
            sim.advance(std::time::Duration::from_secs(60));
            n += 1;
        }
    }
    assert!(n >= 8, "found {n} scenarios");
}

fn error(text: &str) -> String {
    Scenario::parse(text, "bad.yaml").unwrap_err().to_string()
}

const GOOD: &str = "name: x\nstate:\n  namespaces:\n    - name: a\nexpect:\n  outcome: no_action\n";

#[test]
fn a_minimal_file_parses() {
    let s = Scenario::parse(GOOD, "good.yaml").unwrap();
    assert_eq!(s.cluster, "default");
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let e = error("name: x\nstate:\n  namespaces:\n    - name: a\n      budget: 3\nexpect: {}\n");
    assert!(e.contains("bad.yaml:5"), "{e}");
    assert!(e.contains("budget"), "{e}");
    let e = error("name: x\nexpect: {}\nsurprise: true\n");
    assert!(e.contains("bad.yaml:3") && e.contains("surprise"), "{e}");
}

#[test]
fn missing_required_keys_are_named() {
    let e = error("description: no name\nexpect: {}\n");
    assert!(e.contains("name"), "{e}");
    let e = error("name: x\n");
    assert!(e.contains("expect"), "{e}");
}

#[test]
fn bad_values_are_explained() {
    let e = error(
        "name: x\nalerts:\n  - at: soon\n    via: splunk_webhook\n    search_name: s\n    rows: [{a: b}]\nexpect: {}\n",
    );
    assert!(e.contains("bad.yaml:3") && e.contains("duration"), "{e}");
    let e = error(
        "name: x\nfaults:\n  - kind: oom_loop\n    target: inferenceservice/a/b\n    params: {memory_demand: 1Gi, colour: red}\nexpect: {}\n",
    );
    assert!(e.contains("bad.yaml:3") && e.contains("colour"), "{e}");
    let e = error("name: x\nfaults:\n  - kind: meteor_strike\nexpect: {}\n");
    assert!(
        e.contains("bad.yaml:3") && e.contains("meteor_strike"),
        "{e}"
    );
    let e = error(
        "name: x\nfaults:\n  - kind: oom_loop\n    target: pod/a\n    params: {memory_demand: 1Gi}\nexpect: {}\n",
    );
    assert!(e.contains("target"), "{e}");
    let e = error("name: x\nexpect:\n  root_cause: gremlins\n");
    assert!(e.contains("bad.yaml:3") && e.contains("gremlins"), "{e}");
    let e = error("name: x\nexpect:\n  outcome: received\n");
    assert!(e.contains("expect.outcome"), "{e}");
    let e = error(
        "name: x\nstate:\n  inference_services:\n    - {namespace: a, name: b, memory_limit: lots}\nexpect: {}\n",
    );
    assert!(e.contains("bad.yaml:4") && e.contains("quantity"), "{e}");
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        ":",
        "[1, 2",
        "name: [",
        "\t- x",
        "name: x\nexpect: 3\n",
        "--- \n...\n",
        "{{{{",
    ] {
        let e = Scenario::parse(text, "junk.yaml").unwrap_err();
        assert!(e.to_string().starts_with("junk.yaml"), "{e}");
    }
    let e = Scenario::load(Path::new("/nonexistent.yaml")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
}
