//! The runtime's concurrent consume loop on a real Kafka-protocol broker (tansu): keys are
//! handled side by side and each key in order, a partition's committed offset never passes a
//! message still being handled (a consumer killed during a slow handler gets it redelivered),
//! and a shutdown lets the handler in hand finish and commits it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{
    Bus, Handler, HandlerError, Publisher, Received,
    bus::{ConsumerSettings, KafkaBus, KafkaSettings, Outgoing, consume},
    metrics::{BusMetrics, new_registry},
};
use opsmesh_tests::{broker::Broker, eventually};

const LIMIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "consume-loop-test";

/// One partition, so that order and offsets are about one sequence.
fn bus(broker: &Broker) -> Arc<KafkaBus> {
    let settings = KafkaSettings {
        partitions: 1,
        commit_interval: Duration::from_millis(100),
        session_timeout: opsmesh_tests::mesh::SESSION_TIMEOUT,
        ..broker.kafka_settings()
    };
    Arc::new(KafkaBus::new(&settings, "consume-loop-test").expect("kafka client"))
}

fn message(key: &str, body: &str) -> Outgoing {
    Outgoing {
        topic: TOPIC.into(),
        key: key.into(),
        payload: format!(r#"{{"id":"{}","body":"{body}"}}"#, uuid::Uuid::now_v7()).into_bytes(),
        headers: Vec::new(),
    }
}

fn body(message: &Received) -> String {
    let value: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
    value["body"].as_str().expect("body").to_owned()
}

/// Records starts and ends; `slow*` takes 400 ms, `block*` never ends.
#[derive(Default)]
struct Timeline(Mutex<Vec<String>>);

#[async_trait]
impl Handler for Timeline {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let body = body(message);
        self.0.lock().unwrap().push(format!("start {body}"));
        if body.starts_with("slow") {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        if body.starts_with("block") {
            std::future::pending::<()>().await;
        }
        self.0.lock().unwrap().push(format!("end {body}"));
        Ok(())
    }
}

impl Timeline {
    fn has(&self, event: &str) -> bool {
        self.0.lock().unwrap().iter().any(|e| e == event)
    }

    fn at(&self, event: &str) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .position(|e| e == event)
            .unwrap_or_else(|| panic!("{event:?} not in {events:?}"))
    }
}

fn run(
    bus: Arc<KafkaBus>,
    group: &str,
    handler: Arc<Timeline>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), opsmesh_runtime::bus::BusError>>,
) {
    let metrics = BusMetrics::new(&new_registry());
    let publisher = Publisher::new(bus, metrics.clone());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let group = group.to_owned();
    let task = tokio::spawn(async move {
        consume(
            &publisher,
            &metrics,
            &ConsumerSettings::default(),
            &group,
            &[TOPIC],
            handler,
            stop,
        )
        .await
    });
    (shutdown, task)
}

/// The first message a fresh member of `group` receives, if any within `wait`.
async fn next_for_group(bus: &KafkaBus, group: &str, wait: Duration) -> Option<String> {
    let mut subscription = bus.subscribe(group, &[TOPIC]).await.expect("subscribe");
    match tokio::time::timeout(wait, subscription.recv()).await {
        Ok(Ok(message)) => Some(body(&message)),
        _ => None,
    }
}

async fn publish_all(bus: &KafkaBus, messages: &[(&str, &str)]) {
    bus.ensure_topics(&[TOPIC.to_owned()])
        .await
        .expect("topic created");
    for (key, text) in messages {
        bus.publish(message(key, text)).await.expect("published");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_run_side_by_side_each_in_order_and_a_kill_redelivers_the_unfinished() {
    let broker = Broker::memory();
    let bus = bus(&broker);
    publish_all(
        &bus,
        &[
            ("a", "slow-a1"),
            ("b", "b1"),
            ("b", "b2"),
            ("a", "a2"),
            ("c", "block-c"),
            ("d", "d1"),
        ],
    )
    .await;
    let timeline = Arc::new(Timeline::default());
    let (_shutdown, task) = run(bus.clone(), "loop-test", timeline.clone());
    eventually(
        "every message but the blocked one handled",
        LIMIT,
        || async {
            (timeline.has("end a2") && timeline.has("end d1") && timeline.has("start block-c"))
                .then_some(())
        },
    )
    .await;
    assert!(
        timeline.at("end b2") < timeline.at("end slow-a1"),
        "b is not held up by a"
    );
    assert!(
        timeline.at("end slow-a1") < timeline.at("start a2"),
        "a in order"
    );
    assert!(
        timeline.at("end b1") < timeline.at("start b2"),
        "b in order"
    );
    // Let a periodic commit happen: it must stop before the blocked message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    let _ = task.await;
    assert_eq!(
        next_for_group(&bus, "loop-test", LIMIT).await.as_deref(),
        Some("block-c"),
        "the message being handled at the kill is delivered again, though d1 after it finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_lets_the_handler_in_hand_finish_and_commits_it() {
    let broker = Broker::memory();
    let bus = bus(&broker);
    publish_all(&bus, &[("a", "slow-1")]).await;
    let timeline = Arc::new(Timeline::default());
    let (shutdown, task) = run(bus.clone(), "drain-test", timeline.clone());
    eventually("the slow handler started", LIMIT, || async {
        timeline.has("start slow-1").then_some(())
    })
    .await;
    shutdown.cancel();
    task.await
        .expect("joined")
        .expect("consumer stopped cleanly");
    assert!(timeline.has("end slow-1"), "the handler in hand finished");
    bus.publish(message("z", "marker"))
        .await
        .expect("published");
    assert_eq!(
        next_for_group(&bus, "drain-test", LIMIT).await.as_deref(),
        Some("marker"),
        "its offset was committed: the next member starts after it"
    );
}
