//! The diagnoser's tables keyed by input stay within their capacity through the service's
//! real consume path: a flood of new fingerprints and resources is bounded, counted in the
//! metrics, and an alert that finds the incident table full of open incidents is
//! dead-lettered, not lost.

mod support;

use std::time::Duration;

use opsmesh_diagnoser::DiagnoserConfig;
use opsmesh_proto::{Envelope, alert::Alert, topics};
use opsmesh_testkit::eventually;
use support::*;

const LIMIT: Duration = Duration::from_secs(5);

/// The value of `opsmesh_<name>{table="<table>"}`, as `/metrics` shows it.
fn metric(running: &Running, name: &str, table: &str) -> Option<f64> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&running.ctx.registry.gather())
        .unwrap();
    let series = format!("opsmesh_{name}{{table=\"{table}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
}

#[tokio::test]
async fn a_full_incident_table_dead_letters_the_new_alert_and_telemetry_stays_bounded() {
    let running = start(DiagnoserConfig {
        max_incidents: 2,
        telemetry_max_resources: 3,
        ..quick()
    })
    .await;
    for name in ["m1", "m2", "m3", "m4", "m5"] {
        publish_oom_telemetry(&running.ctx, name).await;
    }
    eventually("five resources seen, three kept", LIMIT, || async {
        (metric(&running, "diagnoser_table_evictions_total", "telemetry") == Some(2.0))
            .then_some(())
    })
    .await;
    assert_eq!(
        metric(&running, "diagnoser_table_entries", "telemetry"),
        Some(3.0)
    );

    // Nothing closes these incidents (no remediator): the third finds only open ones.
    for name in ["m3", "m4", "m5"] {
        let alert = alert(name);
        let envelope = Envelope::new("test", "default", Some(alert.fingerprint.clone()), alert);
        running
            .ctx
            .publisher
            .publish(&envelope.payload.fingerprint.clone(), &envelope)
            .await
            .unwrap();
    }
    let dlq = topics::dlq(topics::ALERTS);
    eventually("the third alert dead-lettered", LIMIT, || async {
        (running.bus.snapshot(&dlq).len() == 1).then_some(())
    })
    .await;
    let found = diagnoses(&running.bus, 2).await;
    assert_eq!(found.len(), 2, "two incidents diagnosed");
    let dead = Envelope::<Alert>::from_slice(&running.bus.snapshot(&dlq)[0].payload).unwrap();
    assert!(
        !found
            .iter()
            .any(|d| d.payload.fingerprint == dead.payload.fingerprint),
        "the refused alert was not diagnosed"
    );
    assert_eq!(
        metric(&running, "diagnoser_table_refused_total", "incidents"),
        Some(1.0)
    );
    assert_eq!(
        metric(&running, "diagnoser_table_entries", "incidents"),
        Some(2.0)
    );
}
