//! The open incidents on the metrics endpoint: counted by state until their remediation
//! record is terminal, and the oldest one's age growing while it stays open.

mod support;

use chrono::{TimeDelta, Utc};
use prometheus::{Encoder, Registry, TextEncoder};

use opsmesh_proto::IncidentState;
use opsmesh_reporter::timeline::{IncidentStore, TimelineConfig};
use support::incident::Incident;

/// Every sample of `name` in `registry`, as `(labels, value)`.
fn samples(registry: &Registry, name: &str) -> Vec<(String, f64)> {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    String::from_utf8(text)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn open(registry: &Registry, state: &str) -> f64 {
    let labels = format!("{{state=\"{state}\"}}");
    samples(registry, "reporter_open_incidents")
        .into_iter()
        .find_map(|(l, v)| (l == labels).then_some(v))
        .unwrap_or_else(|| panic!("no reporter_open_incidents{labels}"))
}

fn oldest_age(registry: &Registry) -> f64 {
    samples(registry, "reporter_oldest_open_incident_age_seconds")[0].1
}

#[test]
fn open_incidents_are_counted_by_state_until_a_terminal_record_and_the_oldest_ages() {
    let registry = Registry::new();
    let store = IncidentStore::new(&TimelineConfig::default(), &registry);
    assert_eq!(oldest_age(&registry), 0.0, "nothing open");
    assert_eq!(
        open(&registry, "awaiting_approval"),
        0.0,
        "every open state has a series"
    );

    let mut stuck = Incident::oom("ml-team-a");
    stuck.alert.payload.received_at = Utc::now() - TimeDelta::minutes(45);
    store.apply_alert(stuck.alert.clone());
    let fresh = Incident::oom("ml-team-b");
    store.apply_alert(fresh.alert.clone());
    store.apply_diagnosis(fresh.diagnosis.clone());
    assert_eq!(open(&registry, "received"), 1.0);
    assert_eq!(open(&registry, "diagnosed"), 1.0);
    let age = oldest_age(&registry);
    assert!(
        (2700.0..2760.0).contains(&age),
        "the stuck incident's age: {age}"
    );

    store.apply_diagnosis(stuck.diagnosis.clone());
    let awaiting = stuck.awaiting();
    store.apply_remediation(awaiting.clone());
    assert_eq!(open(&registry, "awaiting_approval"), 1.0);
    assert_eq!(open(&registry, "diagnosed"), 1.0);

    let resolved = stuck.record(1, Some(&awaiting), IncidentState::Resolved, None, "done");
    store.apply_remediation(resolved);
    assert_eq!(open(&registry, "awaiting_approval"), 0.0);
    assert!(
        samples(&registry, "reporter_open_incidents")
            .iter()
            .all(|(labels, _)| !labels.contains("resolved")),
        "terminal states are not open"
    );
    assert!(
        oldest_age(&registry) < 60.0,
        "the oldest open incident is now the fresh one"
    );
}
