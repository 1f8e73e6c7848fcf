//! The operator console in headless Chromium after a real run: `opsmesh demo` plays its
//! incidents through the services, the simulator and the real remediator, then serves the
//! console. The browser (`services/reporter/tests/console/console_pages.test.mjs`, Debian
//! Chromium with playwright-core) signs in through the printed link, screenshots the incident
//! list, filters it with the form and screenshots the OOM incident's page; what the pages show
//! is checked against the remediator's own ledger records, as the reporter wrote them to HEC
//! (`opsmesh-demo/*.hec.jsonl`). Screenshots: `target/console-screenshots/real-run/<time>/`,
//! paths printed and listed in `LATEST` there.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

use opsmesh_testkit::browser::run_script;
use opsmesh_tests::{demo::Demo, workspace_root};

/// What the demo wrote to HEC about one incident.
#[derive(Default)]
struct Played {
    namespace: Option<String>,
    root_cause: Option<String>,
    llm_used: bool,
    /// The remediator's ledger records (`payload.ledger` plus `state`), in ledger order.
    ledger: Vec<Value>,
}

/// Every incident of the demo's HEC files, by id.
fn played(dir: &Path) -> BTreeMap<String, Played> {
    let mut incidents: BTreeMap<String, Played> = BTreeMap::new();
    for file in std::fs::read_dir(dir).unwrap().flatten() {
        if !file.file_name().to_string_lossy().ends_with(".hec.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(file.path()).unwrap().lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let envelope = &event["event"];
            let Some(id) = envelope["incident_id"].as_str() else {
                continue;
            };
            let incident = incidents.entry(id.to_owned()).or_default();
            let payload = &envelope["payload"];
            match event["sourcetype"].as_str().unwrap_or_default() {
                "opsmesh:alert" => {
                    incident.namespace = payload["entity"]["namespace"].as_str().map(str::to_owned)
                }
                "opsmesh:diagnosis" => {
                    incident.root_cause = payload["root_cause"].as_str().map(str::to_owned);
                    incident.llm_used = payload["llm"]["used"] == true;
                }
                "opsmesh:remediation" => {
                    let mut record = payload["ledger"].clone();
                    record["state"] = payload["state"].clone();
                    incident.ledger.push(record);
                }
                _ => {}
            }
        }
    }
    for incident in incidents.values_mut() {
        incident.ledger.sort_by_key(|r| r["seq"].as_u64());
    }
    incidents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_real_runs_incidents_and_the_remediators_ledger() {
    let started = Instant::now();
    let scripts = workspace_root().join("services/reporter/tests/console");
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), "60s", Duration::from_secs(240));
    let incidents = played(&dir.path().join("opsmesh-demo"));
    let (oom, _) = incidents
        .iter()
        .find(|(_, i)| i.root_cause.as_deref() == Some("oom_killed"))
        .unwrap_or_else(|| panic!("no OOM incident played:\n{}", demo.stdout));
    let filter_namespace = "ml-team-b";

    let run = run_script(
        &scripts.join("console_pages.test.mjs"),
        "real-run",
        &[
            ("CONSOLE_LINK", demo.link.as_str()),
            ("INCIDENT_ID", oom.as_str()),
            ("FILTER_NAMESPACE", filter_namespace),
        ],
        Duration::from_secs(120),
    )
    .await;
    let report = &run.report;
    assert_eq!(
        run.screenshots.len(),
        3,
        "list, filtered list and incident: {report}"
    );
    assert!(run.screenshots.iter().all(|p| p.exists()));

    // The list: every played incident, each with the state of its last ledger record.
    let final_state = |id: &str| incidents[id].ledger.last().map(|r| r["state"].clone());
    let rows = |key: &str| -> BTreeMap<String, Value> {
        report[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {report}"))
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
            .collect()
    };
    let listed = rows("list");
    assert_eq!(
        listed.keys().collect::<BTreeSet<_>>(),
        incidents.keys().collect::<BTreeSet<_>>()
    );
    for (id, row) in &listed {
        assert_eq!(
            Some(row["status"].clone()),
            final_state(id),
            "status of {id}"
        );
        assert_eq!(
            row["namespace"].as_str(),
            incidents[id].namespace.as_deref()
        );
    }
    // The filters, server-side.
    let resolved: BTreeSet<&String> = incidents
        .keys()
        .filter(|id| final_state(id).is_some_and(|s| s == "resolved"))
        .collect();
    assert!(!resolved.is_empty());
    assert_eq!(rows("resolved").keys().collect::<BTreeSet<_>>(), resolved);
    let in_namespace: BTreeSet<&String> = incidents
        .iter()
        .filter(|(_, i)| i.namespace.as_deref() == Some(filter_namespace))
        .map(|(id, _)| id)
        .collect();
    assert!(!in_namespace.is_empty());
    assert_eq!(
        rows("in_namespace").keys().collect::<BTreeSet<_>>(),
        in_namespace
    );
    assert_eq!(report["bad_filter"]["status"], 400);
    assert!(
        report["bad_filter"]["error"]
            .as_str()
            .unwrap()
            .starts_with("query parameter `since`: \"last-tuesday\""),
        "{report}"
    );

    // The incident page: its ledger is the remediator's, record for record, hash-linked.
    let page = &report["incident"];
    let ledger = &incidents[oom].ledger;
    assert!(ledger.len() >= 3, "a real remediation has several records");
    let shown = page["ledger"].as_array().unwrap();
    assert_eq!(shown.len(), ledger.len(), "{page}");
    for (row, record) in shown.iter().zip(ledger) {
        for field in ["seq", "state", "hash", "prev_hash"] {
            assert_eq!(
                row[field], record[field],
                "ledger {field}: {row} vs {record}"
            );
        }
    }
    for pair in ledger.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "the remediator's chain links"
        );
    }
    assert_eq!(Some(page["status"].clone()), final_state(oom));
    assert!(page["audit_chain"].as_str().unwrap().contains("intact"));
    assert!(page["root_cause"].as_str().unwrap().contains("oom_killed"));
    assert!(
        page["runbook"]
            .as_str()
            .unwrap()
            .contains("Raise the memory limit")
    );
    assert!(
        !page["spl"].as_array().unwrap().is_empty(),
        "evidence shown"
    );
    let llm = if incidents[oom].llm_used {
        "used"
    } else {
        "unused"
    };
    assert_eq!(page["llm"], llm, "the LLM usage line follows the diagnosis");
    drop(demo);
    eprintln!("console browser test (real run): {:?}", started.elapsed());
}
