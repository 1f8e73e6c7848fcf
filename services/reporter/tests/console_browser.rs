//! The operator console in headless Chromium (Debian `chromium`, driven by playwright-core
//! from `tests/console/`): sign in, open an incident awaiting approval, approve, see the
//! approval published and the page follow the remediator's records live. Screenshots are kept
//! under `target/console-screenshots/` and their paths printed.
//!
//! Fails — never skips — when Chromium or Node cannot be had: it tries
//! `apt-get install -y chromium` and `npm ci` first.

mod support;

use std::{
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::approval::ApprovalDecision;
use support::{
    HecServer, RunningReporter,
    incident::{self, Incident, fake_remediator, publish_awaiting},
    memory_bus,
};

const TOKEN: &str = "alice-token-0123456789abcdef";

fn console_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("tests/console")
}

/// `/usr/bin/chromium` (or `OPSMESH_CHROMIUM`), installed from Debian when missing.
fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("OPSMESH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if !path.exists() {
        eprintln!("{} is missing; installing Debian chromium", path.display());
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut apt = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        let status = apt
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        eprintln!("apt-get install chromium: {status:?}");
    }
    assert!(
        path.exists(),
        "Chromium is required for the console test and could not be installed at {} \
         (apt-get install -y chromium, or set OPSMESH_CHROMIUM)",
        path.display()
    );
    path
}

/// `tests/console/node_modules` with playwright-core, from the lock file.
fn node_modules() {
    let dir = console_dir();
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .expect("npm runs (Node.js is required for the console test)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/console-screenshots/<unix time>
    let target = exe.ancestors().nth(3).unwrap().to_owned();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    target.join("console-screenshots").join(stamp.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_in_the_browser_and_watches_the_action_land() {
    let started = Instant::now();
    let chromium = chromium();
    node_modules();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("console-users");
    std::fs::write(&users, format!("alice@example.com:{TOKEN}:approver\n")).unwrap();
    let users = users.display().to_string();
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN),
            ("OPSMESH__REPORTER__CONSOLE__ENABLED", "true"),
            ("OPSMESH__REPORTER__CONSOLE__USERS_FILE", users.as_str()),
            ("OPSMESH__REPORTER__CONSOLE__COOKIE_SECURE", "false"),
        ],
    )
    .await;
    let incident = Arc::new(Incident::oom("ml-team-a"));
    let first = publish_awaiting(&bus, &incident).await;
    let stop = CancellationToken::new();
    let remediator = fake_remediator(bus.clone(), incident.clone(), first, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let shots = screenshot_dir();
    let output = tokio::process::Command::new("node")
        .arg(console_dir().join("console.test.mjs"))
        .current_dir(console_dir())
        .env("CONSOLE_URL", format!("http://{}", reporter.addr))
        .env("CONSOLE_TOKEN", TOKEN)
        .env("INCIDENT_ID", &incident.id)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), output)
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or(Value::Null);
    let paths: Vec<&str> = report["screenshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for shot in &paths {
        eprintln!("console screenshot: {shot}");
    }
    // The newest run's screenshots, for whoever looks after the test.
    if let Some(parent) = shots.parent() {
        let _ = std::fs::write(parent.join("LATEST"), paths.join("\n") + "\n");
    }
    assert!(
        output.status.success(),
        "browser test failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    assert_eq!(report["user"], "alice@example.com");
    assert_eq!(report["final_status"], "resolved");

    // The approval went out once, with the operator's identity, and the remediator acted.
    let approvals = incident::approvals(&bus).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    let approval = &approvals[0].payload;
    assert_eq!(approval.approver, "alice@example.com");
    assert_eq!(approval.decision, ApprovalDecision::Approve);
    assert_eq!(approval.idempotency_key, incident.idempotency_key());
    assert_eq!(
        approval.comment.as_deref(),
        Some("approved from the browser test")
    );
    stop.cancel();
    let seen = remediator.await.unwrap();
    assert_eq!(seen.len(), 1);
    reporter.stop().await.unwrap();
    eprintln!("console browser test: {:?}", started.elapsed());
}
