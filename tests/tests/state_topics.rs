//! State kept on topics — the diagnoser's incidents — read by every replica to its end before
//! it handles anything, then followed: on tansu (and the in-memory bus) across a partition
//! moving between replicas, and across a start while the broker is down.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use opsmesh_diagnoser::{Diagnoser, DiagnoserConfig};
use opsmesh_proto::{Envelope, alert::Alert, incident::IncidentRecord, topics};
use opsmesh_runbooks::Library;
use opsmesh_runtime::{
    Application, Bus, Component, Context, Publisher, Received, Settings,
    bus::{BusKind, KafkaSettings, MemoryBus, MemorySettings, ReadEvent},
};
use opsmesh_tests::{broker::Broker, eventually};

const LIMIT: Duration = Duration::from_secs(90);

fn alert(fingerprint: &str) -> Envelope<Alert> {
    let alert = opsmesh_testkit::firing_alert(fingerprint, "ml-team-a", fingerprint);
    Envelope::new("test", "default", Some(fingerprint.into()), alert)
}

async fn publish_alert(bus: &dyn Bus, fingerprint: &str) {
    bus.publish(Publisher::message(fingerprint, &alert(fingerprint)))
        .await
        .expect("alert published");
}

/// Everything on `topic` now, read from its start with the runtime's own reader.
async fn read_all(bus: &dyn Bus, topic: &str) -> Vec<Received> {
    let mut reader = bus.read_topic(topic).await.expect("topic opens");
    let mut records = Vec::new();
    loop {
        match tokio::time::timeout(LIMIT, reader.next()).await {
            Ok(Ok(ReadEvent::Record(record))) => records.push(record),
            Ok(Ok(ReadEvent::CaughtUp)) => return records,
            Ok(Err(err)) => panic!("reading {topic}: {err}"),
            Err(_) => panic!("{topic} not read to its end within {LIMIT:?}"),
        }
    }
}

/// The newest incident record of `fingerprint` (its records share a partition: the last).
async fn incident(bus: &dyn Bus, fingerprint: &str) -> Option<IncidentRecord> {
    read_all(bus, topics::INCIDENTS)
        .await
        .iter()
        .map(|m| Envelope::<IncidentRecord>::from_slice(&m.payload).expect("incident record"))
        .map(|e| e.payload)
        .rfind(|r| r.fingerprint == fingerprint)
}

async fn diagnoses(bus: &dyn Bus) -> usize {
    read_all(bus, topics::DIAGNOSES).await.len()
}

fn config() -> DiagnoserConfig {
    DiagnoserConfig {
        telemetry_wait: Duration::from_millis(300),
        ..DiagnoserConfig::default()
    }
}

fn settings(bus: &dyn Bus, kafka: Option<KafkaSettings>) -> Settings {
    let mut settings = Settings::default();
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.http.admin_listen = "127.0.0.1:0".parse().unwrap();
    settings.bus.kind = if bus.kind() == "kafka" {
        BusKind::Kafka
    } else {
        BusKind::Memory
    };
    if let Some(kafka) = kafka {
        settings.bus.kafka = kafka;
    }
    // The test creates the topics: the services' own start must not wait on the broker for
    // that, so what is exercised is reading their state.
    settings.bus.create_topics = false;
    settings
}

fn kafka_settings(broker: &Broker) -> KafkaSettings {
    KafkaSettings {
        fetch_wait_max: Duration::from_millis(100),
        ..broker.kafka_settings()
    }
}

/// One diagnoser replica in this process.
struct Replica {
    ctx: Context,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Replica {
    fn start(bus: Arc<dyn Bus>, settings: &Settings) -> Self {
        let ctx = Context::new(settings.clone(), bus);
        let diagnoser = Arc::new(Diagnoser::new(
            config(),
            Library::built_in().unwrap(),
            None,
            ctx.clone(),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { diagnoser.run(stop).await.expect("diagnoser runs") }
        });
        Self { ctx, stop, task }
    }

    async fn ready(&self) -> Option<()> {
        self.ctx.health.readiness().await.ready.then_some(())
    }

    /// Alerts this replica handled.
    fn alerts_handled(&self) -> u64 {
        self.ctx
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "opsmesh_bus_consumed_total")
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label().iter().any(|l| l.value() == topics::ALERTS)
                    && m.get_label().iter().any(|l| l.value() == "handled")
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("replica stopped");
    }
}

/// Replica A opens an incident and leaves; its partition moves to replica B, which started
/// before the incident existed (it knows it only from following the topic): the next alert
/// joins A's incident instead of opening a second one with a second diagnosis.
async fn the_next_owner_of_a_partition_continues_its_incidents(bus: Arc<dyn Bus>, s: Settings) {
    let fingerprint = "fp-moved";
    let replicas = [
        Replica::start(bus.clone(), &s),
        Replica::start(bus.clone(), &s),
    ];
    for replica in &replicas {
        eventually("replica ready", LIMIT, || replica.ready()).await;
    }
    publish_alert(bus.as_ref(), fingerprint).await;
    let opened = eventually("the incident opened", LIMIT, || {
        incident(bus.as_ref(), fingerprint)
    })
    .await;
    assert_eq!(opened.alert_count, 1);
    let owner = eventually("the alert counted as handled", LIMIT, || async {
        replicas.iter().position(|r| r.alerts_handled() == 1)
    })
    .await;
    let [first, second] = replicas;
    let (owner, survivor) = if owner == 0 {
        (first, second)
    } else {
        (second, first)
    };
    owner.stop().await;

    publish_alert(bus.as_ref(), fingerprint).await;
    let record = eventually("the second alert recorded", LIMIT, || async {
        incident(bus.as_ref(), fingerprint)
            .await
            .filter(|r| r.last_alert_at > opened.last_alert_at)
    })
    .await;
    assert_eq!(survivor.alerts_handled(), 1, "the survivor handled it");
    assert_eq!(record.incident_id, opened.incident_id, "{record:?}");
    assert_eq!(
        record.alert_count, 2,
        "joined the open incident: {record:?}"
    );
    assert_eq!(diagnoses(bus.as_ref()).await, 1, "diagnosed once");
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_tansu_the_next_owner_of_a_partition_continues_its_incidents() {
    let broker = Broker::memory();
    let bus: Arc<dyn Bus> = Arc::new(broker.bus());
    bus.ensure_topics(&topics::all_topic_names()).await.unwrap();
    let settings = settings(bus.as_ref(), Some(kafka_settings(&broker)));
    let bus: Arc<dyn Bus> = Arc::new(
        opsmesh_runtime::bus::KafkaBus::new(&settings.bus.kafka, "state-topics-test").unwrap(),
    );
    the_next_owner_of_a_partition_continues_its_incidents(bus, settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_the_next_owner_of_a_partition_continues_its_incidents() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(&MemorySettings::default()));
    let settings = settings(bus.as_ref(), None);
    the_next_owner_of_a_partition_continues_its_incidents(bus, settings).await;
}

async fn readyz(client: &reqwest::Client, base: &str) -> Option<u16> {
    let response = client
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// A diagnoser started while the broker is down stays up and not ready; once the broker is
/// back it loads its incidents, becomes ready, and the next alert joins the incident recorded
/// before the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_diagnoser_started_while_the_broker_is_down_works_once_it_is_up() {
    let mut broker = Broker::sqlite();
    let bus: Arc<dyn Bus> = Arc::new(broker.bus());
    bus.ensure_topics(&topics::all_topic_names()).await.unwrap();
    let settings = settings(bus.as_ref(), Some(kafka_settings(&broker)));
    let fingerprint = "fp-outage";

    let before = Replica::start(bus.clone(), &settings);
    eventually("first replica ready", LIMIT, || before.ready()).await;
    publish_alert(bus.as_ref(), fingerprint).await;
    let opened = eventually("the incident opened", LIMIT, || {
        incident(bus.as_ref(), fingerprint)
    })
    .await;
    before.stop().await;

    broker.stop();
    let service_bus: Arc<dyn Bus> = Arc::new(
        opsmesh_runtime::bus::KafkaBus::new(&settings.bus.kafka, "state-topics-test").unwrap(),
    );
    let ctx = Context::new(settings.clone(), service_bus);
    let diagnoser: Arc<dyn Component> = Arc::new(Diagnoser::new(
        config(),
        Library::built_in().unwrap(),
        None,
        ctx.clone(),
    ));
    let app = Application::build(ctx, vec![diagnoser]).unwrap();
    let base = format!("http://{}", app.admin_addr());
    let stop = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let status = eventually("/readyz answers", LIMIT, || readyz(&client, &base)).await;
    assert_eq!(status, 503, "not ready while the broker is down");

    broker.restart();
    eventually("/readyz ready once the broker is back", LIMIT, || async {
        (readyz(&client, &base).await == Some(200)).then_some(())
    })
    .await;
    publish_alert(bus.as_ref(), fingerprint).await;
    let record = eventually("the alert after the outage recorded", LIMIT, || async {
        incident(bus.as_ref(), fingerprint)
            .await
            .filter(|r| r.last_alert_at > opened.last_alert_at)
    })
    .await;
    assert_eq!(record.incident_id, opened.incident_id, "{record:?}");
    assert_eq!(record.alert_count, 2, "joined the incident: {record:?}");
    assert_eq!(diagnoses(bus.as_ref()).await, 1, "diagnosed once");
    stop.cancel();
    running.await.unwrap().expect("stopped cleanly");
}
