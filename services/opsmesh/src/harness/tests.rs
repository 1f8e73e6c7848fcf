use serde_json::{Value, json};

use opsmesh_proto::{Envelope, IncidentState, incident::IncidentRecord, remediation::Remediation};
use opsmesh_sim::scenario::Outcome;

use super::*;

fn options() -> Options {
    Options {
        speed: Some(400.0),
        timeout: Duration::from_secs(60),
        hec_out: None,
    }
}

fn public(name: &str) -> Scenario {
    let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../tests/scenarios")
        .join(name);
    Scenario::load(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_control_runs_through_the_mesh() {
    let scenario = public("healthy-control.yaml");
    let v = run_one(&scenario, None, &options()).await;
    assert!(v.error.is_none(), "{v:?}");
    assert_eq!(v.incidents, 1, "{v:?}");
    assert!(v.hec_events > 0, "{v:?}");
    let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "incidents",
            "root_cause",
            "actions",
            "cluster_unchanged",
            "outcome",
            "within"
        ]
    );
    for name in ["incidents", "cluster_unchanged"] {
        assert!(
            v.checks.iter().find(|c| c.name == name).unwrap().passed,
            "{v:?}"
        );
    }
    assert!(v.outcome.is_some(), "an outcome was reached: {v:?}");
    let json = serde_json::to_value(&v).unwrap();
    for key in [
        "scenario",
        "passed",
        "checks",
        "incidents",
        "actions",
        "outcome",
        "time_to_outcome",
        "llm_tokens",
        "hec_events",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_format_reaches_the_receiver() {
    let yaml = r#"
name: formats
state:
  namespaces: [{name: ml-team-c}]
  inference_services: [{namespace: ml-team-c, name: whisper-large}]
alerts:
  - {at: 1m, via: splunk_alert_action, search_name: "A", rows: [{model_name: whisper-large, namespace: ml-team-c}]}
  - {at: 1m, via: splunk_webhook, search_name: "B", rows: [{model_name: whisper-large, namespace: ml-team-c}]}
  - {at: 1m, via: alertmanager, search_name: "C", repeat: 2, every: 30s, rows: [{name: x, namespace: ml-team-c}]}
expect:
  incidents: 3
  within: 5m
"#;
    let scenario = Scenario::parse(yaml, "formats.yaml").unwrap();
    let v = run_one(&scenario, None, &options()).await;
    assert!(v.error.is_none(), "{v:?}");
    // Every delivery was answered 202 (a refusal is an error), whatever the diagnoser
    // then coalesces.
    assert!(v.incidents >= 1 && v.hec_events > 0, "{v:?}");
}

/// A golden example from `proto/examples`, edited.
fn golden<P: opsmesh_proto::Payload>(edit: impl FnOnce(&mut Value)) -> Envelope<P> {
    let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../proto/examples")
        .join(format!("{}.json", P::SCHEMA));
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    Envelope::from_slice(value.to_string().as_bytes()).unwrap()
}

fn remediation(state: &str) -> Envelope<Remediation> {
    golden(|v| v["payload"]["state"] = json!(state))
}

#[test]
fn an_incident_the_sender_cleared_stays_cleared_whatever_the_remediator_does_later() {
    let minute = Duration::from_secs(60);
    let mut o = Observed::default();
    o.remediations
        .push((minute, remediation("awaiting_approval")));
    let incident = o.remediations[0].1.incident_id.clone().unwrap();
    assert_eq!(
        o.final_state(&incident).map(|(_, s)| s),
        Some(Outcome::State(IncidentState::AwaitingApproval))
    );
    o.records.push((
        2 * minute,
        golden::<IncidentRecord>(|v| v["payload"]["status"] = json!("cleared")),
    ));
    // The remediator does not read incident records: its proposal expires an hour on and
    // it escalates. The incident had already ended when the sender said so.
    o.remediations.push((62 * minute, remediation("escalated")));
    assert_eq!(
        o.final_state(&incident),
        Some((2 * minute, Outcome::Cleared))
    );
}

#[test]
fn the_options_speed_overrides_the_scenario_s() {
    let slow = Scenario::parse("name: x\nspeed: 5\nexpect: {}\n", "x.yaml").unwrap();
    let plain = Scenario::parse("name: x\nexpect: {}\n", "x.yaml").unwrap();
    let mut o = options();
    assert_eq!(speed_for(&o, &slow), 400.0);
    o.speed = None;
    assert_eq!(speed_for(&o, &slow), 5.0);
    assert_eq!(speed_for(&o, &plain), DEFAULT_SPEED);
}

#[test]
fn a_bad_file_is_a_failed_verdict_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "name: x\nexpect: {}\nsurprise: 1\n",
    )
    .unwrap();
    let files = scenario_files(dir.path()).unwrap();
    let e = Scenario::load(&files[0]).unwrap_err();
    let v = Verdict::failed(files[0].display().to_string(), e.to_string());
    assert!(!v.passed);
    assert!(v.error.unwrap().contains(":3"));
    assert!(scenario_files(Path::new("/nonexistent")).is_err());
}
