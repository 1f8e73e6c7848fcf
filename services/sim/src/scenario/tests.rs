use opsmesh_proto::IncidentState;

use super::*;

const ALERT: &str =
    "alerts:\n  - at: 1m\n    via: alertmanager\n    search_name: s\n    rows: [{a: b}]\n";

fn parse(text: &str) -> Result<Scenario, String> {
    Scenario::parse(text, "t.yaml").map_err(|e| e.to_string())
}

#[test]
fn an_alert_fires_unless_it_says_resolved() {
    let s = parse(&format!("name: x\n{ALERT}expect: {{}}\n")).unwrap();
    assert_eq!(s.alerts[0].value.status, AlertStatus::Firing);
    let s = parse(&format!(
            "name: x\n{ALERT}  - {{at: 2m, via: alertmanager, status: resolved, search_name: s, rows: [{{a: b}}]}}\nexpect: {{}}\n"
        ))
        .unwrap();
    assert_eq!(s.alerts[1].value.status, AlertStatus::Resolved);
    let e = parse(&format!("name: x\n{ALERT}    status: over\nexpect: {{}}\n")).unwrap_err();
    assert!(e.contains("t.yaml:7") && e.contains("over"), "{e}");
}

#[test]
fn splunk_alerts_cannot_be_resolved() {
    for via in ["splunk_alert_action", "splunk_webhook"] {
        let e = parse(&format!(
                "name: x\nalerts:\n  - {{at: 1m, via: alertmanager, search_name: s, rows: [{{a: b}}]}}\n  - at: 2m\n    via: {via}\n    status: resolved\n    search_name: s\n    rows: [{{a: b}}]\nexpect: {{}}\n"
            ))
            .unwrap_err();
        assert!(
            e.contains("t.yaml:4") && e.contains("alerts[1].status"),
            "{e}"
        );
    }
}

#[test]
fn cleared_is_an_outcome_alongside_the_remediator_states() {
    let s = parse("name: x\nexpect:\n  outcome: cleared\n").unwrap();
    assert_eq!(
        s.expect.outcome,
        Some(ExpectedOutcome::Every(Outcome::Cleared))
    );
    assert_eq!(Outcome::Cleared.to_string(), "cleared");
    let s = parse("name: x\nexpect:\n  outcome: awaiting_approval\n").unwrap();
    assert_eq!(
        s.expect.outcome,
        Some(ExpectedOutcome::Every(Outcome::State(
            IncidentState::AwaitingApproval
        )))
    );
    assert_eq!(
        serde_json::to_value(&s.expect.outcome).unwrap(),
        serde_json::json!("awaiting_approval")
    );
    // A state the remediator passes through is not an outcome; a word it never uses is
    // not even a state.
    let e = parse("name: x\nexpect:\n  outcome: verifying\n").unwrap_err();
    assert!(
        e.contains("t.yaml:3") && e.contains("expect.outcome"),
        "{e}"
    );
    let e = parse("name: x\nexpect:\n  outcome: vanished\n").unwrap_err();
    assert!(
        e.contains("t.yaml:3") && e.contains("vanished") && e.contains("cleared"),
        "{e}"
    );
}

#[test]
fn speed_is_optional_and_positive() {
    assert_eq!(parse("name: x\nexpect: {}\n").unwrap().speed, None);
    assert_eq!(
        parse("name: x\nspeed: 5\nexpect: {}\n").unwrap().speed,
        Some(5.0)
    );
    for bad in ["0", "-2", ".nan"] {
        let e = parse(&format!("name: x\nexpect: {{}}\nspeed: {bad}\n")).unwrap_err();
        assert!(e.contains("t.yaml:3") && e.contains("speed"), "{bad}: {e}");
    }
    let e = parse("name: x\nspeed: fast\nexpect: {}\n").unwrap_err();
    assert!(e.contains("t.yaml:2"), "{e}");
}

#[test]
fn outcome_may_list_one_outcome_per_incident() {
    let s = parse("name: x\nexpect:\n  incidents: 2\n  outcome: [advised, escalated]\n").unwrap();
    let expected = s.expect.outcome.unwrap();
    let advised = Outcome::State(IncidentState::Advised);
    let escalated = Outcome::State(IncidentState::Escalated);
    assert_eq!(
        expected,
        ExpectedOutcome::PerIncident(vec![advised, escalated])
    );
    assert!(expected.met_by(&[Some(advised), Some(escalated)]));
    assert!(!expected.met_by(&[Some(escalated), Some(advised)]));
    assert!(!expected.met_by(&[Some(advised)]));
    // A single outcome is every incident's.
    let every = ExpectedOutcome::Every(escalated);
    assert!(every.met_by(&[Some(escalated), Some(escalated)]));
    assert!(!every.met_by(&[Some(advised), Some(escalated)]));
    assert!(!every.met_by(&[Some(escalated), None]));
    assert!(!every.met_by(&[]));
    for (bad, needle) in [
        ("[advised]", "1 outcomes listed for 2 incidents"),
        ("[]", "empty list"),
        ("[advised, verifying]", "verifying"),
        ("[advised, vanished]", "vanished"),
    ] {
        let e = parse(&format!(
            "name: x\nexpect:\n  incidents: 2\n  outcome: {bad}\n"
        ))
        .unwrap_err();
        assert!(e.contains("t.yaml:4") && e.contains(needle), "{bad}: {e}");
    }
}
