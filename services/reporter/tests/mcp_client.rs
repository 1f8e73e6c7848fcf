//! The MCP server driven by the official MCP Python SDK (`mcp` from PyPI, installed into the
//! shared venv `~/.cache/opsmesh/venv` when missing): over streamable HTTP at `/mcp` it lists
//! the tools, reads an incident with its SPL evidence, verifies the audit chain, searches the
//! runbooks and approves the pending action, which lands on `opsmesh.approvals.v1`; over stdio
//! (`opsmesh mcp`) it lists the tools and searches the runbooks.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use opsmesh_proto::approval::ApprovalDecision;
use support::{
    HecServer, RunningReporter, eventually,
    incident::{self, Incident, publish_awaiting},
    memory_bus,
};

const MCP_VERSION: &str = "2.3.0";
const TOKEN: &str = "assistant-token-0123456789abcdef";

fn workspace() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../..")
}

/// The shared venv's Python with the `mcp` package, installing it when missing. Fails (never
/// skips) when that is impossible.
fn python_with_mcp() -> PathBuf {
    let cache = std::env::var("OPSMESH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/opsmesh")
        });
    let venv = cache.join("venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "creating {} failed", venv.display());
    }
    let has_mcp = |python: &Path| {
        Command::new(python)
            .args(["-c", "import mcp, httpx2"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_mcp(&python) {
        let output = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                &format!("mcp=={MCP_VERSION}"),
            ])
            .output()
            .expect("pip runs");
        assert!(
            output.status.success() && has_mcp(&python),
            "installing mcp=={MCP_VERSION} into {} failed: {}",
            venv.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    python
}

/// Runs `client.py` with `args`; its JSON report.
async fn run_client(args: Vec<String>, env: Vec<(String, String)>) -> Value {
    let python = python_with_mcp();
    let script = workspace().join("services/reporter/tests/mcp/client.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .args(&args)
        .envs(env)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the MCP client finishes within 2 minutes")
        .expect("the MCP client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "MCP client failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client report is not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_lists_tools_reads_an_incident_and_approves_over_http() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("mcp-tokens");
    std::fs::write(&tokens, format!("assistant:{TOKEN}:approver\n")).unwrap();
    let tokens = tokens.display().to_string();
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN),
            ("OPSMESH__REPORTER__MCP__ENABLED", "true"),
            ("OPSMESH__REPORTER__MCP__TOKENS_FILE", tokens.as_str()),
        ],
    )
    .await;
    let incident = Incident::oom("ml-team-a");
    publish_awaiting(&bus, &incident).await;
    // The timeline has it before the client asks.
    let url = format!("http://{}/mcp", reporter.addr);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = run_client(
        vec![
            "http".into(),
            url.clone(),
            TOKEN.into(),
            incident.id.clone(),
            incident.idempotency_key(),
        ],
        vec![],
    )
    .await;
    eprintln!("MCP client report: {report}");
    assert_eq!(report["anonymous_status"], 401);
    assert_eq!(report["audit_chain"], "intact");
    assert_eq!(report["approval"]["approver"], "mcp:assistant");
    assert!(
        report["second_decision"]
            .as_str()
            .unwrap()
            .contains("already decided")
    );

    let approvals = eventually(
        "the approval on the bus",
        Duration::from_secs(5),
        || async {
            let approvals = incident::approvals(&bus).await;
            (!approvals.is_empty()).then_some(approvals)
        },
    )
    .await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].payload.decision, ApprovalDecision::Approve);
    assert_eq!(approvals[0].payload.approver, "mcp:assistant");
    assert_eq!(
        approvals[0].payload.idempotency_key,
        incident.idempotency_key()
    );
    assert_eq!(
        approvals[0].payload.comment.as_deref(),
        Some("approved via MCP")
    );
    reporter.stop().await.unwrap();
    eprintln!("MCP over HTTP: {:?}", started.elapsed());
}

/// `target/<profile>/opsmesh`, built by `cargo build -p opsmesh` (scripts/test.sh builds
/// every binary first).
fn opsmesh_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("opsmesh");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p opsmesh`; scripts/test.sh builds every binary)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_talks_to_opsmesh_mcp_over_stdio() {
    let binary = opsmesh_binary();
    let report = run_client(
        vec!["stdio".into(), binary.display().to_string(), "mcp".into()],
        vec![
            ("OPSMESH__BUS__KIND".into(), "memory".into()),
            ("OPSMESH__LOG__LEVEL".into(), "warn".into()),
        ],
    )
    .await;
    eprintln!("MCP stdio report: {report}");
    assert!(
        report["search"]
            .as_array()
            .unwrap()
            .iter()
            .any(|id| id == "policy-violation"),
        "{report}"
    );
    assert!(
        report["unauthorised"]
            .as_str()
            .unwrap()
            .contains("not authorised")
    );
}
