//! `bus`: publish→consume throughput and latency of the Kafka bus or the in-memory bus.

use std::{sync::Arc, time::Instant};

use opsmesh_runtime::{
    Bus,
    bus::{KafkaBus, KafkaSettings, MemoryBus, MemorySettings, Outgoing},
};

use crate::{Summary, arg, micros_since_epoch, num, usage};

/// Publishes `messages` messages of `size` bytes with up to `in_flight` unacknowledged, while
/// a consumer group member reads them; latency is publish start → consumer receipt.
pub async fn bus(args: &[String]) {
    let messages: usize = num(args, "--messages", 20_000);
    let size: usize = num(args, "--size", 1024);
    let in_flight: usize = num(args, "--in-flight", 256);
    let (bus, label): (Arc<dyn Bus>, String) = if let Some(brokers) = arg(args, "--kafka") {
        let mut settings = KafkaSettings {
            brokers,
            partitions: 6,
            ..KafkaSettings::default()
        };
        // `--client key=value`: librdkafka properties to compare settings.
        for pair in args
            .windows(2)
            .filter(|w| w[0] == "--client")
            .map(|w| &w[1])
        {
            if let Some((k, v)) = pair.split_once('=') {
                settings.client.insert(k.to_owned(), v.to_owned());
            }
        }
        (
            Arc::new(KafkaBus::new(&settings, "opsmesh-bench").unwrap()),
            "kafka (tansu)".into(),
        )
    } else if args.iter().any(|a| a == "--memory") {
        (
            Arc::new(MemoryBus::new(&MemorySettings {
                partitions: 6,
                retention_messages: messages + 1,
            })),
            "in-memory".into(),
        )
    } else {
        usage()
    };
    let topic = format!("opsmesh.bench.{}", uuid::Uuid::now_v7().simple());
    bus.ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("topic created");
    let mut subscription = bus
        .subscribe(&format!("{topic}-group"), &[&topic])
        .await
        .unwrap();
    // Warm-up: wait for the group to own the partitions.
    bus.publish(Outgoing {
        topic: topic.clone().into(),
        key: "warmup".into(),
        payload: vec![0; 8],
        headers: vec![],
    })
    .await
    .unwrap();
    subscription.recv().await.unwrap();

    let consumer = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(messages);
        while latencies.len() < messages {
            let message = subscription.recv().await.unwrap();
            let sent = u64::from_le_bytes(message.payload[..8].try_into().unwrap());
            latencies.push(micros_since_epoch().saturating_sub(sent));
        }
        (latencies, Instant::now())
    });
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..messages {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let bus = bus.clone();
        let topic = topic.clone();
        tasks.spawn(async move {
            let mut payload = vec![b'x'; size.max(8)];
            payload[..8].copy_from_slice(&micros_since_epoch().to_le_bytes());
            bus.publish(Outgoing {
                topic: topic.into(),
                key: format!("key-{}", n % 64),
                payload,
                headers: vec![],
            })
            .await
            .expect("acknowledged");
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let (latencies, finished) = consumer.await.unwrap();
    Summary {
        count: messages,
        elapsed: finished - started,
        latencies_us: latencies,
    }
    .print(
        &format!("bus {label}, {size} B messages, {in_flight} in flight"),
        "msgs",
    );
}
