//! The diagnoser as a service on the in-memory bus: storms, Splunk outages, runbook citations.

use std::{sync::Arc, time::Duration};

use chrono::Utc;

use opsmesh_diagnoser::{Diagnoser, DiagnoserConfig, runbooks::Library, splunk::SplunkClient};
use opsmesh_proto::{
    Envelope, Severity,
    alert::{Alert, AlertSourceKind, AlertStatus, Entity, EntityKind},
    diagnosis::{Diagnosis, EvidenceSource},
    telemetry::{ModelHealth, Telemetry, TelemetryRecord},
    topics,
};
use opsmesh_runtime::{
    Component, Context, Settings,
    bus::{MemoryBus, MemorySettings},
};

fn alert(name: &str) -> Alert {
    Alert {
        source_kind: AlertSourceKind::SplunkAlertAction,
        source: "splunk".into(),
        name: "KServe model error rate above 5%".into(),
        status: AlertStatus::Firing,
        severity: Severity::High,
        fingerprint: format!("fp-{name}"),
        sid: Some("sid".into()),
        app: None,
        owner: None,
        results_link: None,
        rows: vec![],
        rows_truncated: false,
        labels: Default::default(),
        annotations: Default::default(),
        entity: Entity {
            namespace: Some("ml-team-a".into()),
            kind: Some(EntityKind::Inferenceservice),
            name: Some(name.into()),
            ..Entity::default()
        },
        starts_at: None,
        received_at: Utc::now(),
    }
}

struct Running {
    bus: MemoryBus,
    ctx: Context,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(config: DiagnoserConfig) -> Running {
    let bus = MemoryBus::new(&MemorySettings::default());
    let ctx = Context::new(Settings::default(), Arc::new(bus.clone()));
    let splunk = SplunkClient::new(&config.splunk).unwrap();
    let diagnoser = Arc::new(Diagnoser::new(
        config,
        Library::built_in().unwrap(),
        splunk,
        ctx.clone(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(diagnoser.run(stop.clone()));
    Running {
        bus,
        ctx,
        _stop: stop.drop_guard(),
    }
}

fn quick() -> DiagnoserConfig {
    DiagnoserConfig {
        state_load_idle: Duration::from_millis(50),
        ..DiagnoserConfig::default()
    }
}

async fn diagnoses(bus: &MemoryBus, at_least: usize) -> Vec<Envelope<Diagnosis>> {
    for _ in 0..100 {
        let found: Vec<_> = bus
            .snapshot(topics::DIAGNOSES)
            .iter()
            .map(|m| Envelope::<Diagnosis>::from_slice(&m.payload).unwrap())
            .collect();
        if found.len() >= at_least {
            // Give stragglers a moment, so "exactly" assertions see them.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return bus
                .snapshot(topics::DIAGNOSES)
                .iter()
                .map(|m| Envelope::<Diagnosis>::from_slice(&m.payload).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no diagnosis published");
}

async fn publish_oom_telemetry(ctx: &Context, name: &str) {
    let record = ModelHealth {
        namespace: "ml-team-a".into(),
        name: name.into(),
        replicas: 2,
        memory_limit: Some("256Mi".into()),
        restarts: 7,
        oom_killed: 2,
        last_termination_reason: Some("OOMKilled".into()),
        peak_working_set_bytes: Some(480 << 20),
        ..ModelHealth::default()
    };
    let telemetry = Telemetry {
        resource: format!("inferenceservice/ml-team-a/{name}"),
        observed_at: Utc::now(),
        record: TelemetryRecord::Models(record),
    };
    let envelope = Envelope::new("test", "default", None, telemetry);
    ctx.publisher
        .publish(&envelope.payload.resource.clone(), &envelope)
        .await
        .unwrap();
}

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
