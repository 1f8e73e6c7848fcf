//! The diagnoser as a service on the in-memory bus: storms, Splunk outages, runbook citations.

mod support;

use std::{sync::Arc, time::Duration};

use opsmesh_diagnoser::Diagnoser;
use opsmesh_proto::{Envelope, diagnosis::EvidenceSource, topics};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{Component, Context, Settings};
use support::*;

#[tokio::test]
async fn a_storm_of_fifty_alerts_yields_one_incident_and_one_diagnosis() {
    let running = start(quick()).await;
    publish_oom_telemetry(&running.ctx, "gpt-oss-120b").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..50 {
        let envelope = Envelope::new(
            "test",
            "default",
            Some("fp-gpt-oss-120b".into()),
            alert("gpt-oss-120b"),
        );
        running
            .ctx
            .publisher
            .publish("fp-gpt-oss-120b", &envelope)
            .await
            .unwrap();
    }
    let found = diagnoses(&running.bus, 1).await;
    assert_eq!(found.len(), 1, "one diagnosis for the storm");
    let d = &found[0].payload;
    assert_eq!(d.root_cause, opsmesh_proto::RootCause::OomKilled);
    assert_eq!(d.recommended_actions[0].params["memory_limit"], "640Mi");
    let runbook = d.runbook.as_ref().expect("runbook cited");
    assert_eq!(runbook.id, "oom-killed");
    assert_eq!(runbook.section, "Raise the memory limit");
    assert_eq!(runbook.content_hash.len(), 64);
    // Every claim cites evidence that exists.
    for action in &d.recommended_actions {
        for id in &action.evidence_ids {
            assert!(d.evidence.iter().any(|e| &e.id == id), "{id} missing");
        }
    }
    // The storm is recorded on the incident.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let states = running.bus.snapshot(topics::INCIDENTS);
    let last: serde_json::Value = serde_json::from_slice(&states.last().unwrap().payload).unwrap();
    assert_eq!(last["payload"]["alert_count"], 50);
    // One diagnosis on the metrics, by root cause; the other causes' series are there at 0.
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&running.ctx.registry.gather())
        .unwrap();
    for series in [
        r#"opsmesh_diagnoser_diagnoses_total{root_cause="oom_killed"} 1"#,
        r#"opsmesh_diagnoser_diagnoses_total{root_cause="crash_loop"} 0"#,
        "opsmesh_diagnoser_diagnosis_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in {text}");
    }
}

#[tokio::test]
async fn splunk_down_degrades_to_telemetry_and_says_so() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = quick();
    config.splunk.url = Some(format!("http://127.0.0.1:{closed}"));
    config.splunk.token = Some("t".into());
    config.splunk.timeout = Duration::from_millis(500);
    let running = start(config).await;
    publish_oom_telemetry(&running.ctx, "m").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let envelope = Envelope::new("test", "default", Some("fp-m".into()), alert("m"));
    running
        .ctx
        .publisher
        .publish("fp-m", &envelope)
        .await
        .unwrap();
    let found = diagnoses(&running.bus, 1).await;
    let d = &found[0].payload;
    assert_eq!(
        d.root_cause,
        opsmesh_proto::RootCause::OomKilled,
        "decided from telemetry"
    );
    let splunk = d
        .evidence
        .iter()
        .find(|e| e.source == EvidenceSource::SplunkSearch)
        .expect("the attempt is recorded");
    assert!(
        splunk.error.as_deref().unwrap().contains("unreachable"),
        "{splunk:?}"
    );
    assert!(
        splunk
            .query
            .starts_with("search index=opsmesh sourcetype=\"opsmesh:models\"")
    );
    assert!(
        d.explanation.contains("Splunk evidence unavailable"),
        "{}",
        d.explanation
    );
}

#[tokio::test]
async fn the_incident_state_survives_a_restart() {
    let running = start(quick()).await;
    let first = Envelope::new("test", "default", Some("fp-x".into()), alert("x"));
    running.ctx.publisher.publish("fp-x", &first).await.unwrap();
    diagnoses(&running.bus, 1).await;
    // A new diagnoser on the same bus (a restart, or another replica after a rebalance)
    // rebuilds the incidents from the compacted topic: the next alert attaches.
    let bus = running.bus.clone();
    drop(running);
    let ctx = Context::new(Settings::default(), Arc::new(bus.clone()));
    let diagnoser = Arc::new(Diagnoser::new(
        quick(),
        Library::built_in().unwrap(),
        None,
        ctx.clone(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    tokio::spawn(diagnoser.run(stop));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = Envelope::new("test", "default", Some("fp-x".into()), alert("x"));
    ctx.publisher.publish("fp-x", &again).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bus.snapshot(topics::DIAGNOSES).len(),
        1,
        "no second diagnosis"
    );
}
