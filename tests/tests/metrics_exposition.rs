//! What Prometheus scrapes from opsmesh: the whole mesh's `/metrics` after an incident, a
//! poison message and a failing LLM endpoint passes `promtool check metrics` without a single
//! lint problem, and exposes every metric the alerting rules and the Grafana dashboard in
//! deploy/ query.
//!
//! promtool comes from `OPSMESH_PROMTOOL`, else `~/.cache/opsmesh/tools/bin/promtool` (where
//! scripts/test.sh installs it), else `PATH`; without it the test fails, naming the fix.

use std::{
    collections::BTreeSet,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use opsmesh_runtime::{Bus, bus::Outgoing};
use opsmesh_tests::{
    eventually, free_port, hec::HecServer, in_process::InProcessMesh, mesh::incident_complete,
    workspace_root,
};

fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("OPSMESH_PROMTOOL") {
        return path.into();
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/opsmesh/tools/bin/promtool"));
    if let Some(cached) = cached.filter(|p| p.is_file()) {
        return cached;
    }
    let on_path = Command::new("promtool").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "promtool not found (set OPSMESH_PROMTOOL, or run scripts/test.sh, which installs it \
         into ~/.cache/opsmesh/tools/bin)"
    );
    "promtool".into()
}

/// `promtool check metrics` on `text`: its findings, empty when clean.
fn lint(text: &str) -> String {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("metrics written to promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() || !findings.is_empty(),
        "promtool failed without saying why: {output:?}"
    );
    findings
}

/// Every `opsmesh_…` metric name in the monitoring files under deploy/.
fn queried_metrics() -> BTreeSet<String> {
    let dir = workspace_root().join("deploy/k8s/components/monitoring");
    let mut names = BTreeSet::new();
    for file in ["prometheusrule.yaml", "opsmesh-dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
        for (at, _) in text.match_indices("opsmesh_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // The runbook anchors and dashboard uid are not metrics.
            if name.len() > "opsmesh_".len() {
                names.insert(name);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_passes_promtool_and_has_what_the_alerts_query() {
    let hec = HecServer::start().await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "sk-unused").unwrap();
    // Nothing listens there: each consultation fails, fast, and is counted.
    let llm = format!("http://127.0.0.1:{}/v1", free_port());
    let key_file = key.path().display().to_string();
    let mesh = InProcessMesh::start(
        &hec,
        &[
            ("OPSMESH__DIAGNOSER__LLM__ENABLED", "true"),
            ("OPSMESH__DIAGNOSER__LLM__BASE_URL", &llm),
            ("OPSMESH__DIAGNOSER__LLM__API_KEY_FILE", &key_file),
            ("OPSMESH__DIAGNOSER__LLM__TIMEOUT", "2s"),
        ],
    )
    .await;
    let incident = mesh.post_sample_alert().await;
    mesh.bus
        .publish(Outgoing {
            topic: opsmesh_proto::topics::ALERTS.into(),
            key: "poison".into(),
            payload: b"not an envelope".to_vec(),
            headers: Vec::new(),
        })
        .await
        .expect("published");
    eventually(
        "the incident decided in HEC",
        Duration::from_secs(30),
        || async { incident_complete(&hec, &incident).then_some(()) },
    )
    .await;
    let url = format!("http://{}/metrics", mesh.admin);
    let text = eventually(
        "the poison message dead-lettered",
        Duration::from_secs(10),
        || async {
            let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
            text.contains("opsmesh_bus_dead_lettered_total{")
                .then_some(text)
        },
    )
    .await;
    mesh.stop().await;

    let findings = lint(&text);
    assert!(
        findings.is_empty(),
        "promtool check metrics:\n{findings}\n{text}"
    );

    let exposed: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    let missing: Vec<String> = queried_metrics()
        .into_iter()
        .filter(|name| {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            !exposed.contains(family)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ queries metrics the mesh does not expose: {missing:?}\nexposed: {exposed:?}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("opsmesh_bus_consumed_total{")
                && l.contains(r#"outcome="dead_lettered""#)
                && l.ends_with(" 0")),
        "groups that dead-lettered nothing have a 0 series for the DLQ alert's increase()"
    );
    let failed_llm_calls = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"opsmesh_diagnoser_llm_calls_total{outcome="failed"} "#))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        failed_llm_calls.is_some_and(|n| n >= 1.0),
        "the unreachable LLM endpoint is counted: {failed_llm_calls:?}"
    );
}
