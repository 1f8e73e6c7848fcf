use std::time::Instant;

use super::{subscription::LossWarnings, *};

fn msg(topic: &'static str, key: &str, n: u32) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        key: key.into(),
        payload: n.to_string().into_bytes(),
        headers: vec![],
    }
}

fn bus() -> MemoryBus {
    MemoryBus::new(&MemorySettings::default())
}

#[tokio::test]
async fn a_key_stays_in_order_on_one_partition() {
    let bus = bus();
    for n in 0..20 {
        bus.publish(msg("t", "k", n)).await.unwrap();
    }
    let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
    for n in 0..20 {
        let m = sub.recv().await.unwrap();
        assert_eq!(m.payload, n.to_string().into_bytes());
        sub.store(&m).unwrap();
    }
}

#[tokio::test]
async fn a_new_member_resumes_after_the_last_stored_offset() {
    let bus = bus();
    for n in 0..3 {
        bus.publish(msg("t", "k", n)).await.unwrap();
    }
    let mut first = bus.subscribe("g", &["t"]).await.unwrap();
    let m = first.recv().await.unwrap();
    first.store(&m).unwrap();
    let unstored = first.recv().await.unwrap();
    assert_eq!(unstored.payload, b"1");
    drop(first);
    let mut second = bus.subscribe("g", &["t"]).await.unwrap();
    let again = second.recv().await.unwrap();
    assert_eq!(again.payload, b"1", "unstored message is redelivered");
}

#[tokio::test]
async fn members_of_one_group_share_partitions_and_groups_are_independent() {
    let bus = bus();
    let mut a = bus.subscribe("g", &["t"]).await.unwrap();
    let mut b = bus.subscribe("g", &["t"]).await.unwrap();
    let mut other = bus.subscribe("h", &["t"]).await.unwrap();
    for n in 0..40 {
        bus.publish(msg("t", &format!("key-{n}"), n)).await.unwrap();
    }
    let mut seen = Vec::new();
    for sub in [&mut a, &mut b] {
        while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(20), sub.recv()).await {
            seen.push(m.payload);
        }
    }
    assert_eq!(seen.len(), 40, "each message to exactly one member of g");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 40);
    let mut h = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), other.recv()).await {
        h += 1;
    }
    assert_eq!(h, 40, "group h reads everything on its own");
}

#[tokio::test]
async fn recv_wakes_on_publish() {
    let bus = bus();
    let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
    let publisher = bus.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        publisher.publish(msg("t", "k", 7)).await.unwrap();
    });
    let m = tokio::time::timeout(Duration::from_secs(2), sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, b"7");
}

#[tokio::test]
async fn a_paused_member_receives_nothing_until_resumed() {
    let bus = bus();
    let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
    bus.publish(msg("t", "k", 1)).await.unwrap();
    sub.pause().unwrap();
    bus.publish(msg("t", "k", 2)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), sub.recv())
            .await
            .is_err(),
        "nothing delivered while paused"
    );
    sub.resume().unwrap();
    let first = sub.recv().await.unwrap();
    assert_eq!(first.payload, b"1", "resumes where it stood");
    assert_eq!(sub.recv().await.unwrap().payload, b"2");
}

#[tokio::test]
async fn retention_drops_the_oldest_and_counts_what_a_group_never_read() {
    let bus = MemoryBus::new(&MemorySettings {
        partitions: 1,
        retention_messages: 2,
    });
    let registry = crate::metrics::new_registry();
    bus.register_metrics(&registry);
    for n in 0..5 {
        bus.publish(msg("t", "k", n)).await.unwrap();
    }
    let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
    let m = sub.recv().await.unwrap();
    assert_eq!((m.offset, m.payload.as_slice()), (3, b"3".as_slice()));
    sub.store(&m).unwrap();
    assert_eq!(
        sub.recv().await.unwrap().offset,
        4,
        "nothing more is skipped"
    );
    let dropped = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "opsmesh_bus_unread_dropped_total")
        .expect("counter exported");
    let counter = &dropped.get_metric()[0];
    assert_eq!(
        counter.get_counter().get_value(),
        3.0,
        "offsets 0, 1 and 2 were never read"
    );
}

#[tokio::test]
async fn lag_is_what_each_owned_partition_has_not_committed() {
    let bus = MemoryBus::new(&MemorySettings {
        partitions: 1,
        retention_messages: 100,
    });
    let registry = crate::metrics::new_registry();
    bus.register_metrics(&registry);
    let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
    for n in 0..3 {
        bus.publish(msg("t", "k", n)).await.unwrap();
    }
    let m = sub.recv().await.unwrap();
    sub.store(&m).unwrap();
    let lag = |registry: &Registry| {
        registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "opsmesh_bus_consumer_lag")
            .map(|f| f.get_metric()[0].get_gauge().get_value())
    };
    assert_eq!(lag(&registry), Some(2.0), "two of three not committed");
    drop(sub);
    assert_eq!(lag(&registry), None, "no member, no partition owned");
}

#[test]
fn retention_losses_are_warned_about_at_most_once_per_interval() {
    let mut losses = LossWarnings::default();
    let start = Instant::now();
    assert_eq!(
        losses.record(3, start),
        Some(3),
        "the first loss is warned about"
    );
    assert_eq!(losses.record(2, start + Duration::from_secs(1)), None);
    assert_eq!(losses.record(4, start + Duration::from_secs(9)), None);
    assert_eq!(
        losses.record(1, start + LossWarnings::INTERVAL),
        Some(7),
        "the next warning counts everything since the last"
    );
    assert_eq!(losses.record(1, start + Duration::from_secs(11)), None);
}
