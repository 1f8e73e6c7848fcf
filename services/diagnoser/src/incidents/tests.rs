use opsmesh_proto::IncidentState;
use strum::VariantArray;

use super::*;

/// The lifecycle over random histories (proptest).
mod lifecycle;

fn alert(fingerprint: &str, name: &str) -> Alert {
    opsmesh_testkit::firing_alert(fingerprint, "a", name)
}

fn cleared(fingerprint: &str, name: &str) -> Alert {
    Alert {
        status: AlertStatus::Resolved,
        ..alert(fingerprint, name)
    }
}

fn incidents() -> Incidents {
    bounded(DEFAULT_MAX_INCIDENTS).0
}

/// A table of `capacity` incidents, and its metrics.
fn bounded(capacity: usize) -> (Incidents, TableMetrics) {
    let metrics =
        crate::tables::DiagnoserMetrics::new(&prometheus::Registry::new()).table("incidents");
    let incidents = Incidents::new(
        Duration::from_secs(1800),
        Duration::from_secs(900),
        capacity,
        metrics.clone(),
    );
    (incidents, metrics)
}

/// Closes the open incident of `fingerprint` at `at` and applies it.
fn close(incidents: &Incidents, fingerprint: &str, at: DateTime<Utc>) {
    let id = incidents.state().by_fingerprint[fingerprint]
        .incident_id
        .clone();
    let record = incidents.close(&id, IncidentState::Resolved, at).unwrap();
    incidents.apply(record);
}

#[test]
fn a_flood_of_fingerprints_stays_within_the_capacity_and_open_incidents_survive() {
    let (incidents, metrics) = bounded(100);
    // Still open when the flood comes: must never be forgotten.
    let kept = open(&incidents, "fp-still-open", t0());
    for i in 0..10_000 {
        let at = t0() + chrono::Duration::seconds(i);
        let fingerprint = format!("fp-{i}");
        incidents.apply(
            match incidents.on_alert(uuid::Uuid::now_v7(), &alert(&fingerprint, &fingerprint), at) {
                Decision::Open(record) => record,
                other => panic!("{other:?}"),
            },
        );
        close(&incidents, &fingerprint, at);
        assert!(incidents.count() <= 100);
    }
    assert_eq!(incidents.count(), 100);
    assert_eq!(metrics.entries.get(), 100);
    // 10 001 fingerprints seen, 100 held.
    assert_eq!(metrics.evictions.get(), 9_901);
    assert_eq!(metrics.refused.get(), 0);
    let state = incidents.state();
    assert_eq!(state.by_fingerprint["fp-still-open"], kept);
    assert!(
        state.by_fingerprint.contains_key("fp-9999"),
        "the newest kept"
    );
    assert!(
        !state.by_fingerprint.contains_key("fp-0"),
        "the oldest forgotten"
    );
    assert_eq!(state.closed_by_age.len(), 99);
    assert_eq!(state.open_by_incident.len(), 1);
}

#[test]
fn the_longest_closed_goes_first_and_a_table_of_open_incidents_refuses() {
    let (incidents, metrics) = bounded(4);
    for (i, fingerprint) in ["a", "b", "c", "d"].into_iter().enumerate() {
        incidents.apply(
            match incidents.on_alert(
                uuid::Uuid::now_v7(),
                &alert(fingerprint, fingerprint),
                t0() + minutes(i as i64),
            ) {
                Decision::Open(record) => record,
                other => panic!("{other:?}"),
            },
        );
    }
    // b closes before a: b is forgotten first, whatever the order they opened in.
    close(&incidents, "b", t0() + minutes(5));
    close(&incidents, "a", t0() + minutes(6));
    decide(&incidents, &alert("e", "e"), t0() + minutes(7));
    let held = |f: &str| incidents.state().by_fingerprint.contains_key(f);
    assert!(!held("b") && held("a") && held("e"));
    decide(&incidents, &alert("f", "f"), t0() + minutes(8));
    assert!(!held("a") && held("f"));
    assert_eq!(metrics.evictions.get(), 2);
    // Only open incidents left: a new one is refused, counted, and nothing is forgotten.
    assert_eq!(
        incidents.on_alert(uuid::Uuid::now_v7(), &alert("g", "g"), t0() + minutes(9)),
        Decision::Full
    );
    assert_eq!(metrics.refused.get(), 1);
    assert_eq!(incidents.count(), 4);
    // Alerts of the open incidents still attach, and clears still close them.
    assert!(matches!(
        decide(&incidents, &alert("c", "c"), t0() + minutes(9)),
        Decision::Attach(_)
    ));
    assert!(matches!(
        decide(&incidents, &cleared("c", "c"), t0() + minutes(10)),
        Decision::Clear(_)
    ));
    // A forgotten fingerprint opens an incident with an id no earlier incident had (the
    // remediator would take a repeated id as already decided).
    match decide(&incidents, &alert("b", "b"), t0() + minutes(11)) {
        Decision::Open(record) => {
            assert_ne!(record.incident_id, "b");
            assert!(
                record.incident_id.starts_with("b-"),
                "{}",
                record.incident_id
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn restoring_more_records_than_the_capacity_keeps_the_newest_closed_and_every_open() {
    let (before, _) = bounded(1_000);
    let mut published = Vec::new();
    for i in 0..500 {
        let fingerprint = format!("fp-{i}");
        let at = t0() + chrono::Duration::seconds(i);
        let Decision::Open(first) = decide(&before, &alert(&fingerprint, &fingerprint), at) else {
            panic!("{fingerprint} opens")
        };
        published.push(first.clone());
        if i % 5 != 0 {
            let closed = before
                .close(
                    &first.incident_id,
                    IncidentState::Resolved,
                    t0() + minutes(i),
                )
                .unwrap();
            published.push(closed);
        }
    }
    let (after, metrics) = bounded(200);
    published.into_iter().for_each(|r| after.restore(r));
    assert_eq!(after.count(), 200);
    let state = after.state();
    // 100 open (every fifth), and the 100 latest closed.
    assert_eq!(state.open_by_incident.len(), 100);
    assert!(state.by_fingerprint.contains_key("fp-499"));
    assert!(!state.by_fingerprint.contains_key("fp-1"));
    assert_eq!(metrics.evictions.get(), 300);
}

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// Opens an incident for `fingerprint` at `at` and applies it.
fn open(incidents: &Incidents, fingerprint: &str, at: DateTime<Utc>) -> IncidentRecord {
    match incidents.on_alert(uuid::Uuid::now_v7(), &alert(fingerprint, "m"), at) {
        Decision::Open(record) => {
            incidents.apply(record.clone());
            record
        }
        other => panic!("{other:?}"),
    }
}

/// Applies whatever a decision records and returns it.
fn decide(incidents: &Incidents, alert: &Alert, at: DateTime<Utc>) -> Decision {
    let decision = incidents.on_alert(uuid::Uuid::now_v7(), alert, at);
    match &decision {
        Decision::Open(r) | Decision::Attach(r) | Decision::Clear(r) => incidents.apply(r.clone()),
        Decision::Ignore | Decision::Full => {}
    }
    decision
}

#[test]
fn a_storm_is_one_incident() {
    let incidents = incidents();
    let now = t0();
    open(&incidents, "fp", now);
    for i in 1..50 {
        let at = now + chrono::Duration::seconds(10 * i);
        match decide(&incidents, &alert("fp", "m"), at) {
            Decision::Attach(record) => assert_eq!(record.alert_count, i as u64 + 1),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(incidents.count(), 1);
}

#[test]
fn a_related_alert_for_the_same_target_attaches() {
    let incidents = incidents();
    let now = t0();
    open(&incidents, "fp1", now);
    let decision = incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp2", "m"), now);
    assert!(
        matches!(decision, Decision::Attach(ref r) if r.fingerprint == "fp1"),
        "{decision:?}"
    );
    let other = incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp3", "other"), now);
    assert!(matches!(other, Decision::Open(_)));
}

#[test]
fn every_terminal_outcome_closes_the_incident_with_that_outcome() {
    for &state in IncidentState::VARIANTS {
        let incidents = incidents();
        let first = open(&incidents, "fp", t0());
        let closed = incidents.close(&first.incident_id, state, t0() + minutes(2));
        if !state.is_terminal() {
            assert_eq!(closed, None, "{state} must not close");
            continue;
        }
        let closed = closed.unwrap_or_else(|| panic!("{state} must close"));
        assert_eq!(closed.status.to_string(), state.to_string());
        assert_eq!(closed.closed_at, Some(t0() + minutes(2)));
        incidents.apply(closed);
        // Exactly one outcome: a later one changes nothing (but an escalation's, below).
        let later = if state == IncidentState::Escalated {
            IncidentState::Escalated
        } else {
            IncidentState::Resolved
        };
        assert_eq!(
            incidents.close(&first.incident_id, later, t0() + minutes(3)),
            None
        );
    }
}

/// The remediator takes an escalated incident up again for an investigation's proposals; the
/// outcome of that second attempt is the incident's, so a recurrence is judged on it.
#[test]
fn an_escalation_taken_up_again_ends_with_its_later_outcome() {
    let incidents = incidents();
    let first = open(&incidents, "fp", t0());
    incidents.apply(
        incidents
            .close(
                &first.incident_id,
                IncidentState::Escalated,
                t0() + minutes(2),
            )
            .unwrap(),
    );
    // Not yet ended: awaiting approval closes nothing.
    assert_eq!(
        incidents.close(
            &first.incident_id,
            IncidentState::AwaitingApproval,
            t0() + minutes(3)
        ),
        None
    );
    let resolved = incidents
        .close(
            &first.incident_id,
            IncidentState::Resolved,
            t0() + minutes(9),
        )
        .expect("the reopened incident's end");
    assert_eq!(resolved.status, IncidentStatus::Resolved);
    assert_eq!(resolved.closed_at, Some(t0() + minutes(9)));
    incidents.apply(resolved);
    // Final now: nothing replaces a resolution.
    assert_eq!(
        incidents.close(
            &first.incident_id,
            IncidentState::Escalated,
            t0() + minutes(10)
        ),
        None
    );
    let second = match decide(&incidents, &alert("fp", "m"), t0() + minutes(40)) {
        Decision::Open(record) => record,
        other => panic!("{other:?}"),
    };
    assert_eq!(second.previous_outcome, Some(IncidentStatus::Resolved));
}

#[test]
fn alerts_in_the_quiet_period_attach_visibly_to_the_closed_incident() {
    let incidents = incidents();
    let first = open(&incidents, "fp", t0());
    let close = t0() + minutes(5);
    incidents.apply(
        incidents
            .close(&first.incident_id, IncidentState::Advised, close)
            .unwrap(),
    );
    for (n, at) in [close + minutes(1), close + minutes(29)]
        .into_iter()
        .enumerate()
    {
        match decide(&incidents, &alert("fp", "m"), at) {
            Decision::Attach(record) => {
                assert_eq!(record.incident_id, first.incident_id);
                assert_eq!(record.status, IncidentStatus::Advised, "stays closed");
                assert_eq!(record.alert_count, 2 + n as u64);
                assert_eq!(record.last_alert_at, at);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_recurrence_after_the_quiet_period_opens_a_new_linked_incident() {
    let incidents = incidents();
    let first = open(&incidents, "fp", t0());
    let close = t0() + minutes(5);
    incidents.apply(
        incidents
            .close(&first.incident_id, IncidentState::Escalated, close)
            .unwrap(),
    );
    let second = match decide(&incidents, &alert("fp", "m"), close + minutes(30)) {
        Decision::Open(record) => record,
        other => panic!("{other:?}"),
    };
    assert_eq!(second.incident_id, "fp-2");
    assert_eq!(second.generation, 2);
    assert_eq!(second.recurrence_of.as_deref(), Some("fp"));
    assert_eq!(second.previous_outcome, Some(IncidentStatus::Escalated));
    assert_eq!((second.alert_count, second.closed_at), (1, None));
    let (note, escalate_only) = recurrence_note(&second).unwrap();
    assert!(escalate_only);
    assert!(note.contains("fp") && note.contains("escalated"), "{note}");

    // The third links to the second, not the first.
    incidents.apply(
        incidents
            .close("fp-2", IncidentState::Resolved, close + minutes(40))
            .unwrap(),
    );
    let third = match decide(&incidents, &alert("fp", "m"), close + minutes(80)) {
        Decision::Open(record) => record,
        other => panic!("{other:?}"),
    };
    assert_eq!(third.incident_id, "fp-3");
    assert_eq!(third.recurrence_of.as_deref(), Some("fp-2"));
    let (note, escalate_only) = recurrence_note(&third).unwrap();
    assert!(
        !escalate_only,
        "a fixed incident's recurrence is diagnosed anew"
    );
    assert!(note.contains("fp-2") && note.contains("resolved"), "{note}");
    assert_eq!(recurrence_note(&first), None);
}

#[test]
fn the_sender_clearing_closes_the_open_incident_as_cleared() {
    let incidents = incidents();
    let first = open(&incidents, "fp", t0());
    match decide(&incidents, &cleared("fp", "m"), t0() + minutes(3)) {
        Decision::Clear(record) => {
            assert_eq!(record.incident_id, first.incident_id);
            assert_eq!(record.status, IncidentStatus::Cleared);
            assert_eq!(record.closed_at, Some(t0() + minutes(3)));
        }
        other => panic!("{other:?}"),
    }
    // Nothing open any more: a second clear, and the remediator's late outcome, do nothing.
    assert_eq!(
        decide(&incidents, &cleared("fp", "m"), t0() + minutes(4)),
        Decision::Ignore
    );
    assert_eq!(
        incidents.close(
            &first.incident_id,
            IncidentState::Resolved,
            t0() + minutes(5)
        ),
        None
    );
    assert!(matches!(
        decide(&incidents, &alert("fp", "m"), t0() + minutes(40)),
        Decision::Open(ref r) if r.previous_outcome == Some(IncidentStatus::Cleared)
    ));
}

#[test]
fn a_clear_for_nothing_open_is_ignored() {
    assert_eq!(
        incidents().on_alert(uuid::Uuid::now_v7(), &cleared("fp", "m"), t0()),
        Decision::Ignore
    );
}

#[test]
fn the_close_is_never_before_the_last_alert() {
    // The sender's clock runs ahead of ours (or is the scenario runner's virtual clock):
    // the quiet period still starts after the alerts it follows.
    let incidents = incidents();
    let first = open(&incidents, "fp", t0());
    decide(&incidents, &alert("fp", "m"), t0() + minutes(10));
    let record = incidents
        .close(
            &first.incident_id,
            IncidentState::Resolved,
            t0() + minutes(1),
        )
        .unwrap();
    assert_eq!(record.closed_at, Some(t0() + minutes(10)));
}

#[test]
fn a_redelivered_opening_alert_opens_the_same_incident_again_until_closed() {
    let incidents = incidents();
    let a = alert("fp", "m");
    let id = uuid::Uuid::now_v7();
    let Decision::Open(first) = incidents.on_alert(id, &a, t0()) else {
        panic!()
    };
    incidents.apply(first.clone());
    assert_eq!(
        incidents.on_alert(id, &a, t0()),
        Decision::Open(first.clone())
    );
    incidents.apply(
        incidents
            .close(&first.incident_id, IncidentState::Resolved, t0())
            .unwrap(),
    );
    assert_eq!(incidents.on_alert(id, &a, t0()), Decision::Ignore);
}

#[test]
fn an_unapplied_decision_is_decided_again() {
    let incidents = incidents();
    let a = alert("fp", "m");
    let first = incidents.on_alert(uuid::Uuid::now_v7(), &a, t0());
    assert!(matches!(first, Decision::Open(_)));
    assert!(
        matches!(
            incidents.on_alert(uuid::Uuid::now_v7(), &a, t0()),
            Decision::Open(_)
        ),
        "publish failed: retry opens"
    );
}

#[test]
fn restored_state_keeps_the_lifecycle() {
    let before = incidents();
    let first = open(&before, "fp", t0());
    let closed = before
        .close(
            &first.incident_id,
            IncidentState::Refused,
            t0() + minutes(1),
        )
        .unwrap();
    // The compacted topic may hand back any of a fingerprint's records, in any order.
    for records in [
        vec![first.clone(), closed.clone()],
        vec![closed.clone(), first.clone()],
    ] {
        let after = incidents();
        records.into_iter().for_each(|r| after.restore(r));
        assert!(matches!(
            after.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), t0() + minutes(2)),
            Decision::Attach(ref r) if r.status == IncidentStatus::Refused
        ));
        match after.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), t0() + minutes(40)) {
            Decision::Open(r) => {
                assert_eq!(r.incident_id, "fp-2");
                assert_eq!(r.recurrence_of.as_deref(), Some("fp"));
                assert_eq!(r.previous_outcome, Some(IncidentStatus::Refused));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn an_older_record_read_back_does_not_set_the_state_back() {
    let incidents = incidents();
    let first = open(&incidents, "fp", t0());
    // Two alerts stamped at the same instant: only the count tells them apart.
    let Decision::Attach(second) = decide(&incidents, &alert("fp", "m"), t0()) else {
        panic!()
    };
    incidents.restore(first);
    assert!(matches!(
        incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), t0()),
        Decision::Attach(ref r) if r.alert_count == second.alert_count + 1
    ));
}

#[test]
fn a_record_from_before_outcomes_restores_as_closed() {
    let old = serde_json::json!({
        "fingerprint": "fp", "incident_id": "fp", "generation": 1, "status": "resolved",
        "opened_at": "2026-03-01T12:00:00Z", "last_alert_at": "2026-03-01T12:02:00Z",
        "resolved_at": "2026-03-01T12:05:00Z", "alert_count": 4,
        "first_alert_id": "0193a6b2-7c1e-7a4e-9f00-1c2d3e4f5a6b"
    });
    let incidents = incidents();
    incidents.restore(serde_json::from_value(old).unwrap());
    assert!(matches!(
        incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), t0() + minutes(20)),
        Decision::Attach(ref r) if r.alert_count == 5
    ));
    assert!(matches!(
        incidents.on_alert(uuid::Uuid::now_v7(), &alert("fp", "m"), t0() + minutes(36)),
        Decision::Open(ref r) if r.incident_id == "fp-2"
            && r.previous_outcome == Some(IncidentStatus::Resolved)
    ));
}

#[test]
fn the_alert_time_is_the_senders_when_it_states_one() {
    let mut a = alert("fp", "m");
    assert_eq!(alert_time(&a), a.received_at);
    a.sid = Some("scheduler__admin__opsmesh__RMD5deadbeef_at_1772366400_3".into());
    assert_eq!(alert_time(&a), t0());
    a.sid = Some("1772366400.123".into());
    assert_eq!(
        alert_time(&a),
        a.received_at,
        "an ad-hoc sid states no trigger time"
    );
    a.starts_at = Some(t0() + minutes(1));
    assert_eq!(alert_time(&a), t0() + minutes(1));
}

#[test]
fn a_recurrence_of_an_unfixed_incident_only_escalates_with_its_history() {
    let finding = || Finding {
        root_cause: RootCause::OomKilled,
        confidence: 0.9,
        target: Some("inferenceservice/a/m".into()),
        summary: "m is OOMKilled".into(),
        explanation: "Killed at the limit (ev2).".into(),
        actions: vec![ActionProposal {
            kind: ActionKind::PatchMemoryLimit,
            target: "inferenceservice/a/m".into(),
            params: BTreeMap::new(),
            evidence_ids: vec!["ev2".into()],
            rationale: "raise".into(),
        }],
        developer_fix: None,
        evidence: Vec::new(),
        query: "oom".into(),
    };
    let mut record = open(&incidents(), "fp", t0());
    let mut first = finding();
    shape_recurrence(&mut first, &record, "ev1");
    assert_eq!(first.explanation, finding().explanation, "not a recurrence");
    assert_eq!(first.actions, finding().actions);

    record.recurrence_of = Some("fp".into());
    record.previous_outcome = Some(IncidentStatus::Escalated);
    let mut shaped = finding();
    shape_recurrence(&mut shaped, &record, "ev1");
    assert_eq!(shaped.actions.len(), 1);
    let escalate = &shaped.actions[0];
    assert_eq!(escalate.kind, ActionKind::Escalate);
    assert_eq!(escalate.target, "inferenceservice/a/m");
    assert_eq!(escalate.evidence_ids, ["ev1", "ev2"]);
    assert_eq!(escalate.params["recurrence_of"], "fp");
    assert_eq!(escalate.params["previous_outcome"], "escalated");
    assert!(
        shaped
            .explanation
            .starts_with("Recurrence of incident fp, which ended escalated")
            && shaped
                .explanation
                .contains("Not proposed again: patch_memory_limit."),
        "{}",
        shaped.explanation
    );
    assert!(shaped.summary.contains("recurrence of fp"));

    record.previous_outcome = Some(IncidentStatus::Resolved);
    let mut fixed = finding();
    shape_recurrence(&mut fixed, &record, "ev1");
    assert_eq!(fixed.actions, finding().actions, "diagnosed anew");
    assert!(
        fixed
            .explanation
            .starts_with("Recurrence of incident fp, which ended resolved.")
    );

    record.previous_outcome = Some(IncidentStatus::Advised);
    let mut healthy = Finding {
        root_cause: RootCause::None,
        actions: Vec::new(),
        ..finding()
    };
    shape_recurrence(&mut healthy, &record, "ev1");
    assert!(
        healthy.actions.is_empty(),
        "nothing wrong: nothing to escalate"
    );
}
