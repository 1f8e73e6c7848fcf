//! Helpers shared by the diagnoser's service-level tests.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use chrono::Utc;

use opsmesh_diagnoser::{
    Diagnoser, DiagnoserConfig, llm::Advisor, splunk::SplunkClient, splunk_mcp::SplunkSearcher,
};
use opsmesh_proto::{
    Envelope,
    alert::Alert,
    diagnosis::Diagnosis,
    telemetry::{ModelHealth, Telemetry, TelemetryRecord},
    topics,
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{
    Component, Context, Settings,
    bus::{MemoryBus, MemorySettings},
};

pub fn alert(name: &str) -> Alert {
    Alert {
        sid: Some("sid".into()),
        ..opsmesh_testkit::firing_alert(&format!("fp-{name}"), "ml-team-a", name)
    }
}

pub struct Running {
    pub bus: MemoryBus,
    pub ctx: Context,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn start(config: DiagnoserConfig) -> Running {
    start_with(config, None).await
}

pub async fn start_with(config: DiagnoserConfig, advisor: Option<Advisor>) -> Running {
    start_adding(config, |diagnoser| diagnoser.with_advisor(advisor)).await
}

/// A diagnoser of `config` with what `add` gives it (an advisor, an investigator).
pub async fn start_adding(
    config: DiagnoserConfig,
    add: impl FnOnce(Diagnoser) -> Diagnoser,
) -> Running {
    start_on(MemoryBus::new(&MemorySettings::default()), config, add).await
}

/// As [`start_adding`], on a bus another diagnoser may have used (a restart).
pub async fn start_on(
    bus: MemoryBus,
    config: DiagnoserConfig,
    add: impl FnOnce(Diagnoser) -> Diagnoser,
) -> Running {
    let ctx = Context::new(Settings::default(), Arc::new(bus.clone()));
    let splunk = SplunkClient::new(&config.splunk)
        .unwrap()
        .map(SplunkSearcher::Rest);
    let diagnoser = Arc::new(add(Diagnoser::new(
        config,
        Library::built_in().unwrap(),
        splunk,
        ctx.clone(),
    )));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(diagnoser.run(stop.clone()));
    Running {
        bus,
        ctx,
        _stop: stop.drop_guard(),
    }
}

pub fn quick() -> DiagnoserConfig {
    DiagnoserConfig {
        telemetry_wait: Duration::from_millis(300),
        ..DiagnoserConfig::default()
    }
}

pub async fn diagnoses(bus: &MemoryBus, at_least: usize) -> Vec<Envelope<Diagnosis>> {
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

pub async fn publish_oom_telemetry(ctx: &Context, name: &str) {
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
