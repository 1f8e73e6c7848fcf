//! Invalid configuration stops a service at start, naming the key and the problem.

use std::process::Command;

fn run_with(env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(opsmesh_tests::binary("opsmesh"))
        .args(["run", "diagnoser"])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("opsmesh runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_is_named() {
    let (ok, stderr) = run_with(&[
        ("OPSMESH__BUS__KAFKA__BROKERS", "127.0.0.1:9"),
        ("OPSMESH__BUS__KAFKA__BROKRES", "127.0.0.1:9"),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("`bus.kafka`") && stderr.contains("unknown field `brokres`"),
        "{stderr}"
    );
}

#[test]
fn a_bad_number_is_named() {
    let (ok, stderr) = run_with(&[
        ("OPSMESH__BUS__KAFKA__BROKERS", "127.0.0.1:9"),
        ("OPSMESH__BUS__KAFKA__PARTITIONS", "six"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("`bus.kafka.partitions`"), "{stderr}");
}

#[test]
fn a_missing_broker_is_named() {
    let (ok, stderr) = run_with(&[]);
    assert!(!ok);
    assert!(
        stderr.contains("`bus.kafka.brokers`") && stderr.contains("required"),
        "{stderr}"
    );
}

#[test]
fn a_bad_duration_in_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opsmesh.toml");
    std::fs::write(
        &path,
        "[bus.kafka]\nbrokers = \"127.0.0.1:9\"\n[shutdown]\ngrace = \"soon\"\n",
    )
    .unwrap();
    let output = Command::new(opsmesh_tests::binary("opsmesh"))
        .args(["run", "diagnoser", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("`shutdown.grace`"), "{stderr}");
}

#[test]
fn a_service_binary_rejects_its_own_bad_section() {
    let output = Command::new(opsmesh_tests::binary("opsmesh-reporter"))
        .env_clear()
        .env("OPSMESH__BUS__KAFKA__BROKERS", "127.0.0.1:9")
        .env("OPSMESH__REPORTER__HEC__URL", "ftp://splunk")
        .env("OPSMESH__REPORTER__HEC__TOKEN", "t")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("`reporter.hec.url`") && stderr.contains("http(s)"),
        "{stderr}"
    );
}
