//! The operator console in headless Chromium (Debian `chromium`, driven by playwright-core
//! from `tests/console/`): sign in, open an incident awaiting approval, approve, see the
//! approval published and the page follow the remediator's records live (a stand-in
//! remediator: approving in the browser needs one that waits for it); then click Investigate
//! and see the stand-in investigator's report arrive live with its citation. Screenshots are kept
//! under `target/console-screenshots/approval/` and their paths printed. The pages of a real
//! run, with the real remediator's ledger: `tests/tests/console_browser.rs`.
//!
//! Fails — never skips — when Chromium or Node cannot be had: it tries
//! `apt-get install -y chromium` and `npm ci` first.

mod support;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use opsmesh_proto::approval::ApprovalDecision;
use opsmesh_testkit::browser::run_script;
use support::{
    HecServer, RunningReporter,
    incident::{self, Incident, fake_remediator, publish_awaiting},
    investigation::fake_investigator,
    memory_bus,
};

const TOKEN: &str = "alice-token-0123456789abcdef";

fn console_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("tests/console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_in_the_browser_and_watches_the_action_land() {
    let started = Instant::now();
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
    let investigator = fake_investigator(bus.clone(), incident.target(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let base = format!("http://{}", reporter.addr);
    let run = run_script(
        &console_dir().join("console.test.mjs"),
        "approval",
        &[
            ("CONSOLE_URL", base.as_str()),
            ("CONSOLE_TOKEN", TOKEN),
            ("INCIDENT_ID", incident.id.as_str()),
        ],
        Duration::from_secs(180),
    )
    .await;
    let report = &run.report;
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

    // One investigation requested from the button, by the operator, about the incident.
    assert_eq!(report["requested_by"], "console:alice@example.com");
    stop.cancel();
    let seen = remediator.await.unwrap();
    assert_eq!(seen.len(), 1);
    let requests = investigator.await.unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        report["investigation_id"],
        requests[0].payload.investigation_id.as_str()
    );
    assert_eq!(
        requests[0].payload.incident_id.as_deref(),
        Some(incident.id.as_str())
    );
    reporter.stop().await.unwrap();
    eprintln!("console browser test: {:?}", started.elapsed());
}
