//! The runtime's topic reader and follower on a real Kafka-protocol broker (tansu): an empty
//! topic, records written before open read to the end and `CaughtUp` right there, records
//! written later followed, `catch_up` waiting for what another producer wrote, and a reader
//! opened from offsets never delivering the records before them.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{
    Bus,
    bus::{
        KafkaBus, KafkaSettings, Outgoing, ReadEvent, ReaderSettings, StateTopic, TopicFollower,
        TopicReader,
    },
    health::Health,
};
use opsmesh_tests::broker::Broker;

const LIMIT: Duration = Duration::from_secs(60);

fn record(topic: &str, n: u32) -> Outgoing {
    Outgoing {
        topic: topic.to_owned().into(),
        key: format!("key-{n}"),
        payload: n.to_string().into_bytes(),
        headers: vec![],
    }
}

fn number(payload: &[u8]) -> u32 {
    String::from_utf8_lossy(payload).parse().unwrap()
}

fn kafka_bus(broker: &Broker) -> KafkaBus {
    let settings = KafkaSettings {
        fetch_wait_max: Duration::from_millis(100),
        ..broker.kafka_settings()
    };
    KafkaBus::new(&settings, "topic-reader-test").unwrap()
}

async fn next(reader: &mut Box<dyn TopicReader>) -> ReadEvent {
    tokio::time::timeout(LIMIT, reader.next())
        .await
        .expect("an event within the limit")
        .expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_topic_is_caught_up_at_once_then_followed() {
    let broker = Broker::memory();
    let bus = kafka_bus(&broker);
    bus.ensure_topics(&["empty".to_owned()]).await.unwrap();
    let mut reader = bus.read_topic("empty").await.unwrap();
    assert!(matches!(next(&mut reader).await, ReadEvent::CaughtUp));
    bus.publish(record("empty", 1)).await.unwrap();
    assert!(matches!(next(&mut reader).await, ReadEvent::Record(r) if number(&r.payload) == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_before_open_are_read_then_caught_up_then_new_records_follow() {
    let broker = Broker::memory();
    let bus = kafka_bus(&broker);
    bus.ensure_topics(&["state".to_owned()]).await.unwrap();
    for n in 0..30 {
        bus.publish(record("state", n)).await.unwrap();
    }
    let mut reader = bus.read_topic("state").await.unwrap();
    for n in 30..35 {
        bus.publish(record("state", n)).await.unwrap();
    }
    let mut read = Vec::new();
    while let ReadEvent::Record(r) = next(&mut reader).await {
        read.push(number(&r.payload));
    }
    // Partitions interleave, but `CaughtUp` comes right after the last record there at open.
    assert!(*read.last().unwrap() < 30, "caught up late: {read:?}");
    assert!((0..30).all(|n| read.contains(&n)), "{read:?}");
    while read.len() < 35 {
        match next(&mut reader).await {
            ReadEvent::Record(r) => read.push(number(&r.payload)),
            ReadEvent::CaughtUp => panic!("caught up is reported once"),
        }
    }
    read.sort_unstable();
    assert_eq!(read, (0..35).collect::<Vec<_>>(), "each record once");
    assert_eq!(reader.positions(), bus.end_offsets("state").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_waits_for_what_another_producer_wrote() {
    let broker = Broker::memory();
    let bus: Arc<dyn Bus> = Arc::new(kafka_bus(&broker));
    bus.ensure_topics(&["state".to_owned()]).await.unwrap();
    for n in 0..10 {
        bus.publish(record("state", n)).await.unwrap();
    }
    let applied = Arc::new(Mutex::new(Vec::new()));
    let state = applied.clone();
    let shutdown = CancellationToken::new();
    let health = Health::default();
    let follower = tokio::time::timeout(
        LIMIT,
        TopicFollower::start(
            bus.clone(),
            &StateTopic::declare(&health, "state"),
            &ReaderSettings::default(),
            move |r| state.lock().unwrap().push(number(&r.payload)),
            &shutdown,
        ),
    )
    .await
    .expect("loaded within the limit")
    .unwrap();
    assert_eq!(
        applied.lock().unwrap().len(),
        10,
        "loaded before start returns"
    );
    assert!(health.readiness().await.ready);

    let other = kafka_bus(&broker);
    for n in 10..40 {
        other.publish(record("state", n)).await.unwrap();
    }
    tokio::time::timeout(LIMIT, follower.catch_up())
        .await
        .expect("caught up within the limit")
        .unwrap();
    let mut seen = applied.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_opened_from_offsets_never_delivers_the_records_before_them() {
    let broker = Broker::memory();
    let bus = kafka_bus(&broker);
    bus.ensure_topics(&["history".to_owned()]).await.unwrap();
    for n in 0..30 {
        bus.publish(record("history", n)).await.unwrap();
    }
    let from = bus.end_offsets("history").await.unwrap();
    for n in 30..35 {
        bus.publish(record("history", n)).await.unwrap();
    }
    let mut reader = bus.read_topic_from("history", &from).await.unwrap();
    assert_eq!(reader.positions(), from, "starts at the offsets asked for");
    let mut read = Vec::new();
    while let ReadEvent::Record(r) = next(&mut reader).await {
        assert!(r.offset >= from[&r.partition], "{} delivered", r.offset);
        read.push(number(&r.payload));
    }
    for n in 35..40 {
        bus.publish(record("history", n)).await.unwrap();
    }
    while read.len() < 10 {
        match next(&mut reader).await {
            ReadEvent::Record(r) => read.push(number(&r.payload)),
            ReadEvent::CaughtUp => panic!("caught up is reported once"),
        }
    }
    read.sort_unstable();
    assert_eq!(read, (30..40).collect::<Vec<_>>(), "only what came after");
    assert_eq!(
        reader.positions(),
        bus.end_offsets("history").await.unwrap()
    );
}
