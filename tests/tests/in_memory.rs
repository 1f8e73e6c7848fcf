//! The same flow in one process on the in-memory bus, and the demo command.

use std::time::Duration;

use serde_json::Value;

use opsmesh_tests::{
    eventually, hec::HecServer, in_process::InProcessMesh, mesh::incident_complete,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splunk_alert_crosses_the_mesh_in_one_process() {
    let hec = HecServer::start().await;
    let mesh = InProcessMesh::start(&hec, &[]).await;
    let incident = mesh.post_sample_alert().await;
    eventually(
        "alert, diagnosis and decision in HEC",
        Duration::from_secs(20),
        || async { incident_complete(&hec, &incident).then_some(()) },
    )
    .await;
    let types = hec.sourcetypes(&incident);
    let count = |t: &str| types.iter().filter(|have| *have == t).count();
    assert_eq!(
        (count("opsmesh:alert"), count("opsmesh:diagnosis")),
        (1, 1),
        "{types:?}"
    );
    assert!(
        count("opsmesh:remediation") >= 1,
        "the remediator's ledger: {types:?}"
    );
    mesh.stop().await;
}

#[test]
fn the_demo_plays_its_incidents_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(opsmesh_tests::binary("opsmesh"))
        .args(["demo", "--once", "--timeout", "30s"])
        .current_dir(dir.path())
        .env_clear()
        .env("OPSMESH__HTTP__LISTEN", "127.0.0.1:0")
        .env("OPSMESH__HTTP__ADMIN_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for outcome in ["outcome: resolved", "outcome: advised"] {
        assert!(stdout.contains(outcome), "{stdout}");
    }
    assert_eq!(stdout.matches("outcome: ").count(), 3, "{stdout}");
    // Per incident: the alert, its diagnosis and the remediator's ledger, as Splunk indexes them.
    for scenario in [
        "oom-loop-gpt-oss",
        "policy-denial-root-container",
        "cost-spike-gpu-scale-out",
    ] {
        let path = dir
            .path()
            .join("opsmesh-demo")
            .join(format!("{scenario}.hec.jsonl"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let count = |t: &str| events.iter().filter(|e| e["sourcetype"] == t).count();
        assert_eq!(
            (count("opsmesh:alert"), count("opsmesh:diagnosis")),
            (1, 1),
            "{scenario}"
        );
        assert!(
            count("opsmesh:remediation") >= 3,
            "{scenario}: a ledger of several steps"
        );
    }
}
