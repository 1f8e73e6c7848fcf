//! The Splunk app's alert action, run exactly as Splunk runs it, against the real receiver:
//! `python3 bin/opsmesh.py --execute < payload` with the reference payload and gzipped
//! results file must be accepted; tampered, stale, unsigned or wrongly signed requests must be
//! refused, and the setup page's test alert must be answered without reaching the mesh
//! (splunk-app/tests/test_interop_receiver.py, driven from here).

use std::{process::Command, time::Duration};

use serde_json::Value;

use opsmesh_tests::{eventually, process::Service};

const SECRET: &str = "interop-signing-secret-8c2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_splunk_alert_action_delivers_to_the_real_receiver() {
    let work = tempfile::tempdir().unwrap();
    let secrets = work.path().join("splunk.secret");
    std::fs::write(&secrets, SECRET).unwrap();
    let hec_file = work.path().join("hec.jsonl");
    let mut mesh = Service::new(
        "opsmesh-up",
        opsmesh_tests::binary("opsmesh"),
        &["up"],
        &[
            (
                "OPSMESH__RECEIVER__SOURCES__SPLUNK__SECRETS_FILE",
                secrets.display().to_string(),
            ),
            (
                "OPSMESH__REPORTER__HEC__FILE",
                hec_file.display().to_string(),
            ),
        ],
        work.path(),
    );
    mesh.start();
    mesh.wait_ready().await;

    let repo = opsmesh_tests::workspace_root();
    let output = Command::new("python3")
        .arg("splunk-app/tests/run.py")
        .arg("--interop-only")
        .current_dir(&repo)
        .env("OPSMESH_RECEIVER_URL", mesh.url("/v1/alerts/splunk"))
        .env("OPSMESH_RECEIVER_SECRET", SECRET)
        .output()
        .expect("python3 runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "interop tests failed:\n{report}");

    // What the script delivered went all the way through the mesh: every row of the
    // gzipped results file is in the alert written to HEC.
    let alert = eventually(
        "the action's alert in HEC",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&hec_file).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| {
                    e["sourcetype"] == "opsmesh:alert"
                        && e["event"]["payload"]["source_kind"] == "splunk_alert_action"
                })
        },
    )
    .await;
    let rows = alert["event"]["payload"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "both rows of results.csv.gz: {alert}");
    assert_eq!(rows[1]["model_name"], "llama-3-8b");
    assert_eq!(alert["event"]["payload"]["source"], "splunk");
    // The setup page's test alert was answered in test mode: it never reached the mesh.
    let written = std::fs::read_to_string(&hec_file).unwrap_or_default();
    assert!(
        !written.contains("opsmesh setup test alert"),
        "the test alert opened an incident:\n{written}"
    );
}
