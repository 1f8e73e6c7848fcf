//! The incident read model's memory stays bounded under floods of distinct messages: alerts
//! of a storm, audit records, diagnoses and approvals are trimmed to
//! `max_events_per_incident`, the ids of dropped messages to `max_dropped_ids_per_incident`,
//! the alert-to-incident map to `max_alert_ids`; every eviction is counted, and the views
//! (status, pending approval, time to outcome, audit chain) still answer as with everything
//! in memory.

mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use prometheus::{Encoder, Registry, TextEncoder};
use uuid::Uuid;

use opsmesh_proto::{
    Envelope, IncidentState,
    alert::Alert,
    approval::{Approval, ApprovalDecision},
    remediation::Remediation,
};
use opsmesh_reporter::timeline::{ChainStatus, IncidentStore, TimelineConfig};
use support::{
    HecServer, RunningReporter, eventually,
    incident::{Incident, publish},
    memory_bus,
};

fn small() -> TimelineConfig {
    TimelineConfig {
        max_events_per_incident: 8,
        max_dropped_ids_per_incident: 16,
        max_alert_ids: 32,
        ..TimelineConfig::default()
    }
}

/// The sample of `name{table="…"}` in `registry`.
fn sample(registry: &Registry, name: &str, table: &str) -> f64 {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    let prefix = format!("{name}{{table=\"{table}\"}} ");
    String::from_utf8(text)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix}"))
}

/// `count` distinct alerts of `incident`'s storm, a millisecond apart after its first.
fn storm(incident: &Incident, count: usize) -> Vec<Envelope<Alert>> {
    (1..=count)
        .map(|i| {
            let mut alert = incident.alert.clone();
            alert.id = Uuid::now_v7();
            alert.payload.received_at =
                incident.alert.payload.received_at + TimeDelta::milliseconds(i as i64);
            alert
        })
        .collect()
}

/// `count` records chained after `first` (`first` included), the third one an outcome.
fn chain(incident: &Incident, count: u64) -> Vec<Envelope<Remediation>> {
    let mut records = vec![incident.awaiting()];
    for seq in 1..count {
        let state = match seq {
            1 => IncidentState::Executing,
            2 => IncidentState::Resolved,
            _ => IncidentState::Verifying,
        };
        let record = incident.record(seq, records.last(), state, None, &format!("step {seq}"));
        records.push(record);
    }
    records
}

#[test]
fn a_storm_of_distinct_alerts_stays_within_every_cap_and_counts_what_it_drops() {
    let registry = Registry::new();
    let store = IncidentStore::new(&small(), &registry);
    let incident = Incident::oom("ml-team-a");
    store.apply_alert(incident.alert.clone());
    let alerts = storm(&incident, 199);
    for alert in &alerts {
        assert!(store.apply_alert(alert.clone()));
    }

    let detail = store.detail(&incident.id).unwrap();
    assert_eq!(detail.summary.alert_count, 200, "every alert is counted");
    assert_eq!(detail.alerts.len(), 8);
    assert_eq!(detail.alerts[0].id, incident.alert.id, "the first is kept");
    assert_eq!(detail.alerts[7].id, alerts[198].id, "and the latest");
    assert_eq!(
        detail.summary.opened_at,
        Some(incident.alert.payload.received_at)
    );
    let entries = |table| sample(&registry, "reporter_timeline_entries", table);
    let evicted = |table| sample(&registry, "reporter_timeline_evictions_total", table);
    assert_eq!(entries("alerts"), 8.0);
    assert_eq!(evicted("alerts"), 192.0);
    assert_eq!(entries("dropped_ids"), 16.0);
    assert_eq!(evicted("dropped_ids"), 176.0);
    assert_eq!(entries("alert_owners"), 32.0);
    assert_eq!(evicted("alert_owners"), 168.0);
    assert_eq!(entries("incidents"), 1.0);

    // Redelivered: a kept alert and a recently dropped one change nothing.
    assert!(!store.apply_alert(alerts[198].clone()));
    assert!(!store.apply_alert(alerts[190].clone()));
    assert!(!store.apply_alert(incident.alert.clone()));
    assert_eq!(store.detail(&incident.id).unwrap().summary.alert_count, 200);

    // The diagnosis still joins, and the views answer.
    assert!(store.apply_diagnosis(incident.diagnosis.clone()));
    let summary = store.summary(&incident.id).unwrap();
    assert_eq!(summary.status, "diagnosed");
    assert_eq!(entries("diagnoses"), 1.0);
    assert_eq!(
        entries("alerts"),
        7.0,
        "the diagnosis took a storm alert's place"
    );
}

#[test]
fn an_intact_chain_stays_intact_when_its_oldest_records_leave_memory() {
    let registry = Registry::new();
    let store = IncidentStore::new(&small(), &registry);
    let incident = Incident::oom("ml-team-a");
    store.apply_alert(incident.alert.clone());
    store.apply_diagnosis(incident.diagnosis.clone());
    let records = chain(&incident, 100);
    for record in &records {
        assert!(store.apply_remediation(record.clone()));
    }

    let detail = store.detail(&incident.id).unwrap();
    assert_eq!(
        detail.actions.len(),
        6,
        "8 messages: the alert, the diagnosis, 6 records"
    );
    assert_eq!(detail.actions[5].seq, 99);
    let audit = &detail.audit_chain;
    assert_eq!(audit.status, ChainStatus::Intact, "{:?}", audit.problems);
    assert_eq!((audit.records, audit.dropped_from_memory), (100, 94));
    assert_eq!(
        audit.head_hash.as_deref(),
        Some(records[99].payload.ledger.hash.as_str())
    );
    assert_eq!(
        detail.summary.outcome_at,
        Some(records[2].occurred_at),
        "the first outcome, dropped from memory, still times the incident"
    );
    assert_eq!(
        sample(
            &registry,
            "reporter_timeline_evictions_total",
            "remediations"
        ),
        94.0
    );
    assert_eq!(
        sample(&registry, "reporter_timeline_entries", "remediations"),
        6.0
    );

    // A redelivered old record is remembered; an unknown one at a dropped position cannot
    // be placed and breaks the chain, as a duplicate would with everything in memory.
    assert!(!store.apply_remediation(records[93].clone()));
    assert!(!store.apply_remediation(records[99].clone()));
    let mut duplicate = records[10].clone();
    duplicate.id = Uuid::now_v7();
    assert!(store.apply_remediation(duplicate));
    let audit = store.detail(&incident.id).unwrap().audit_chain;
    assert_eq!(audit.status, ChainStatus::Broken);
    assert!(
        audit.problems[0].contains("seq 10 arrived after"),
        "{:?}",
        audit.problems
    );
}

#[test]
fn a_broken_record_keeps_the_chain_broken_after_it_leaves_memory() {
    let store = IncidentStore::new(&small(), &Registry::new());
    let incident = Incident::oom("ml-team-b");
    store.apply_diagnosis(incident.diagnosis.clone());
    let mut records = chain(&incident, 40);
    records[5].payload.reason = "step 5 (edited after sealing)".into();
    for record in &records {
        store.apply_remediation(record.clone());
    }
    let audit = store.detail(&incident.id).unwrap().audit_chain;
    assert_eq!(audit.dropped_from_memory, 33);
    assert_eq!(audit.status, ChainStatus::Broken);
    assert!(
        audit.problems[0].starts_with("seq 5: hash") && audit.problems[0].contains("content"),
        "{:?}",
        audit.problems
    );
    // Without alerts, the incident opened with its diagnosis.
    let summary = store.summary(&incident.id).unwrap();
    assert_eq!(summary.opened_at, Some(incident.diagnosis.occurred_at));
}

#[test]
fn floods_of_diagnoses_and_approvals_keep_the_latest_and_the_pending_decision() {
    let registry = Registry::new();
    let store = IncidentStore::new(&small(), &registry);
    let incident = Incident::oom("ml-team-c");
    store.apply_alert(incident.alert.clone());
    for i in 0..30 {
        let mut diagnosis = incident.diagnosis.clone();
        diagnosis.id = Uuid::now_v7();
        diagnosis.occurred_at = Utc::now() - TimeDelta::seconds(60 - i);
        diagnosis.payload.summary = format!("diagnosis {i}");
        store.apply_diagnosis(diagnosis);
    }
    store.apply_diagnosis(incident.diagnosis.clone());
    let awaiting = incident.awaiting();
    store.apply_remediation(awaiting.clone());
    let approval = |key: &str, decision| {
        let mut approval = Envelope::derive(
            &awaiting,
            "opsmesh-reporter",
            &Uuid::now_v7().to_string(),
            Approval {
                idempotency_key: key.to_owned(),
                decision,
                approver: "alice@example.com".into(),
                comment: None,
                signature: None,
            },
        );
        approval.occurred_at = awaiting.occurred_at + TimeDelta::milliseconds(1);
        approval
    };
    for i in 0..40 {
        store.apply_approval(approval(
            &format!("other-action-{i}"),
            ApprovalDecision::Reject,
        ));
    }
    assert!(
        store
            .pending_approval(&incident.id)
            .unwrap()
            .decided
            .is_none()
    );
    store.apply_approval(approval(
        &incident.idempotency_key(),
        ApprovalDecision::Approve,
    ));

    let detail = store.detail(&incident.id).unwrap();
    assert!(detail.alerts.len() + detail.actions.len() + detail.approvals.len() <= 8);
    assert_eq!(
        detail.summary.summary.as_deref(),
        Some(incident.diagnosis.payload.summary.as_str())
    );
    assert_eq!(detail.summary.status, "awaiting_approval");
    let pending = detail.pending_approval.unwrap();
    let decided = pending.decided.expect("the latest decision is kept");
    assert_eq!(decided.decision, ApprovalDecision::Approve);
    let evicted = |table| sample(&registry, "reporter_timeline_evictions_total", table);
    let entries = |table| sample(&registry, "reporter_timeline_entries", table);
    assert_eq!(entries("diagnoses") + evicted("diagnoses"), 31.0);
    assert_eq!(entries("approvals") + evicted("approvals"), 41.0);
    assert!(entries("diagnoses") <= 8.0 && entries("approvals") <= 8.0);
    assert_eq!(
        entries("alerts") + entries("diagnoses") + entries("remediations") + entries("approvals"),
        8.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_from_the_bus_is_bounded_and_counted_on_the_metrics_endpoint() {
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__TIMELINE__MAX_EVENTS_PER_INCIDENT", "8"),
            (
                "OPSMESH__REPORTER__TIMELINE__MAX_DROPPED_IDS_PER_INCIDENT",
                "16",
            ),
            ("OPSMESH__REPORTER__TIMELINE__MAX_ALERT_IDS", "32"),
        ],
    )
    .await;
    let incident = Incident::oom("ml-team-a");
    publish(&bus, &incident.alert).await;
    for alert in storm(&incident, 59) {
        publish(&bus, &alert).await;
    }
    let evicted = "opsmesh_reporter_timeline_evictions_total";
    let entries = "opsmesh_reporter_timeline_entries";
    eventually(
        "52 storm alerts dropped",
        Duration::from_secs(10),
        || async {
            let dropped = reporter.metric(evicted, &[("table", "alerts")]).await;
            (dropped == 52.0).then_some(())
        },
    )
    .await;
    for (name, table, value) in [
        (entries, "alerts", 8.0),
        (entries, "dropped_ids", 16.0),
        (entries, "alert_owners", 32.0),
        (evicted, "alert_owners", 28.0),
    ] {
        let sample = reporter.metric(name, &[("table", table)]).await;
        assert_eq!(sample, value, "{name}{{table={table:?}}}");
    }
    reporter.stop().await.unwrap();
}

#[test]
fn zero_caps_are_configuration_errors_naming_the_key() {
    use opsmesh_runtime::Validate;
    for (config, key) in [
        (
            TimelineConfig {
                max_dropped_ids_per_incident: 0,
                ..TimelineConfig::default()
            },
            "reporter.timeline.max_dropped_ids_per_incident",
        ),
        (
            TimelineConfig {
                max_alert_ids: 0,
                ..TimelineConfig::default()
            },
            "reporter.timeline.max_alert_ids",
        ),
    ] {
        let err = config
            .validate("reporter.timeline")
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err} should name {key}");
    }
}
