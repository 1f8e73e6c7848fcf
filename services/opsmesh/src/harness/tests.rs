use serde_json::{Value, json};

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState, RootCause, incident::IncidentRecord,
    remediation::Remediation,
};
use opsmesh_sim::scenario::{ExpectedAction, Outcome};

use super::*;

fn options() -> Options {
    Options {
        speed: Some(400.0),
        timeout: Duration::from_secs(60),
        mesh_wait: DEFAULT_MESH_WAIT,
        hec_out: None,
        investigator: None,
    }
}

fn public(name: &str) -> Scenario {
    let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../tests/scenarios/public")
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

fn seen(kind: ActionKind, target: &str) -> ActionSeen {
    ActionSeen {
        kind,
        target: target.into(),
        at: "0s".into(),
    }
}

fn wanted(kind: ActionKind, target: Option<&str>) -> ExpectedAction {
    ExpectedAction {
        kind,
        target: target.map(str::to_owned),
    }
}

#[test]
fn actions_compare_in_order_within_an_incident_and_in_any_order_across_incidents() {
    use ActionKind::{
        ApplyResourceQuota as Quota, PatchMemoryLimit as Patch, ScaleInferenceService as Scale,
    };
    let a = "inferenceservice/ns/a";
    let b = "inferenceservice/ns/b";
    // Two incidents handled b first: the contract's order across incidents is free.
    let incidents = vec![vec![seen(Patch, b)], vec![seen(Patch, a)]];
    assert!(judge::is_merge(
        &[wanted(Patch, Some(a)), wanted(Patch, Some(b))],
        &incidents
    ));
    assert!(!judge::is_merge(&[wanted(Patch, Some(a))], &incidents));
    assert!(!judge::is_merge(
        &[wanted(Patch, Some(a)), wanted(Patch, Some(a))],
        &incidents
    ));
    // Within an incident the order is the order executed.
    let ns = "namespace/ns";
    let one = vec![vec![seen(Scale, a), seen(Quota, ns)]];
    assert!(judge::is_merge(
        &[wanted(Scale, Some(a)), wanted(Quota, Some(ns))],
        &one
    ));
    assert!(!judge::is_merge(
        &[wanted(Quota, Some(ns)), wanted(Scale, Some(a))],
        &one
    ));
    // An expected action without a target takes any: the match must not be greedy.
    let two = vec![vec![seen(Patch, a)], vec![seen(Patch, b), seen(Scale, b)]];
    assert!(judge::is_merge(
        &[
            wanted(Patch, None),
            wanted(Patch, Some(a)),
            wanted(Scale, Some(b))
        ],
        &two
    ));
    // Many incidents with the same actions, in any order, are judged quickly.
    let many: Vec<Vec<ActionSeen>> = (0..24)
        .map(|n| {
            vec![
                seen(Patch, &format!("inferenceservice/ns/m{n}")),
                seen(Scale, a),
            ]
        })
        .collect();
    let mut expected: Vec<ExpectedAction> = (0..24)
        .rev()
        .flat_map(|n| {
            [
                wanted(Patch, Some(&format!("inferenceservice/ns/m{n}"))),
                wanted(Scale, None),
            ]
        })
        .collect();
    assert!(judge::is_merge(&expected, &many));
    expected.pop();
    expected.push(wanted(Patch, None));
    assert!(!judge::is_merge(&expected, &many));
}

#[test]
fn without_an_allow_list_the_run_allows_the_namespaces_its_cluster_declares() {
    let yaml = "name: x\nstate:\n  namespaces: [{name: a}]\n  inference_services: [{namespace: b, name: m}, {namespace: a, name: n}]\n  argocd_apps: [{name: app, namespace: c}]\nexpect: {}\n";
    let open = Scenario::parse(yaml, "x.yaml").unwrap();
    assert_eq!(
        files::allowed_namespaces(&open),
        "allowed_namespaces = [\"a\", \"b\", \"c\"]\n"
    );
    let listed = Scenario::parse(
        &format!("{yaml}policy: {{mode: auto, allowed_namespaces: [b]}}\n"),
        "x.yaml",
    )
    .unwrap();
    assert_eq!(
        files::allowed_namespaces(&listed),
        "allowed_namespaces = [\"b\"]\n"
    );
}

#[test]
fn a_directory_s_scenarios_include_its_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    for name in ["b.yaml", "public/a.yml", "notes.md"] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    assert_eq!(
        scenario_files(dir.path()).unwrap(),
        [dir.path().join("b.yaml"), dir.path().join("public/a.yml")]
    );
}

/// A verdict with one incident, as the judge writes it.
fn played(root_cause: RootCause, target: &str, outcome: &str, writes: &[&str]) -> Verdict {
    let mut v = Verdict::failed("s".into(), String::new());
    v.error = None;
    v.passed = true;
    v.outcome = Some(outcome.into());
    v.per_incident = vec![IncidentSeen {
        id: "i1".into(),
        root_cause: Some(root_cause),
        target: Some(target.into()),
        time_to_diagnosis: Some(Duration::from_secs(10)),
        outcome: Some(outcome.into()),
        time_to_outcome: Some(Duration::from_secs(70)),
        llm_tokens: 120,
        llm_cost_usd: 0.002,
    }];
    v.cluster_writes = writes.iter().map(|w| (*w).to_owned()).collect();
    v.llm_tokens = 120;
    v.llm_cost_usd = 0.002;
    v
}

#[test]
fn the_scores_follow_their_definitions() {
    let oom = Scenario::parse(
        "name: oom\nfaults: [{at: 0s, kind: oom_loop, target: inferenceservice/a/m, params: {memory_demand: 1Gi}}]\nexpect: {root_cause: oom_killed, actions: [{kind: patch_memory_limit}], outcome: resolved}\n",
        "oom.yaml",
    )
    .unwrap();
    let control = Scenario::parse(
        "name: control\nfaults: [{at: 0s, kind: none}]\nexpect: {root_cause: none, actions: [], outcome: no_action}\n",
        "control.yaml",
    )
    .unwrap();
    let fixed = played(
        RootCause::OomKilled,
        "inferenceservice/a/m",
        "resolved",
        &["patch x"],
    );
    let s = score(Some(&oom), "oom.yaml", &[fixed.clone(), fixed.clone()]);
    let m = &s.metrics;
    assert!(s.stable && s.misses.is_empty());
    assert_eq!((m.detection.hits, m.detection.of), (2, 2));
    assert_eq!((m.localisation.hits, m.localisation.of), (2, 2));
    assert_eq!((m.root_cause.hits, m.root_cause.of), (2, 2));
    assert_eq!((m.mitigation.hits, m.mitigation.of), (2, 2));
    // Expected a change: false remediation does not apply.
    assert_eq!(m.false_remediation.of, 0);
    assert_eq!(m.time_to_mitigation.seconds, Some(70.0));
    assert_eq!(m.llm_tokens, 240);

    // Wrong place, wrong cause: detected all the same.
    let elsewhere = played(
        RootCause::CrashLoop,
        "inferenceservice/a/other",
        "escalated",
        &[],
    );
    let m = score(Some(&oom), "oom.yaml", &[elsewhere]).metrics;
    assert_eq!(
        (m.detection.hits, m.localisation.hits, m.root_cause.hits),
        (1, 0, 0)
    );
    assert_eq!((m.escalation.hits, m.escalation.of), (1, 1));
    assert_eq!(m.time_to_mitigation.seconds, None);

    // A healthy control that changed the cluster: a false remediation, and a false alarm.
    let meddled = played(
        RootCause::OomKilled,
        "inferenceservice/a/m",
        "resolved",
        &["patch x"],
    );
    let m = score(Some(&control), "control.yaml", &[meddled]).metrics;
    assert_eq!((m.false_remediation.hits, m.false_remediation.of), (1, 1));
    assert_eq!((m.detection.hits, m.detection.of), (0, 1));
    assert_eq!(m.localisation.of, 0, "nothing to localise in a control");
    assert_eq!(m.mitigation.of, 0);

    // Runs that disagree are reported, and a failed run is a miss.
    let mut failed = fixed.clone();
    failed.passed = false;
    let s = score(Some(&oom), "oom.yaml", &[fixed, failed]);
    assert!(!s.stable);
    assert_eq!(s.misses.len(), 1, "{:?}", s.misses);
    let report = Report::new(2, vec![s]);
    assert!(!report.clean());
    assert_eq!(report.aggregate.passed.rate(), Some(0.5));
}
