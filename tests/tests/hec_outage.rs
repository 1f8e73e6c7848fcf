//! The reporter's HEC writer through a Splunk outage longer than `max.poll.interval`, on a
//! real Kafka-protocol broker (tansu), with two reporter replicas sharing the partitions: the
//! writers pause their partitions but keep polling, so neither is evicted from the group, no
//! partition moves while its messages are in hand, and after the outage every event reaches
//! HEC exactly once.

use std::{collections::HashMap, time::Duration};

use opsmesh_tests::{
    broker::Broker,
    eventually,
    hec::{HecServer, Mode},
    mesh::{self, indexed_ids, publish_alerts},
    process::Service,
};

const LIMIT: Duration = Duration::from_secs(90);
/// Longer than `MAX_POLL_INTERVAL` twice over.
const OUTAGE: Duration = Duration::from_secs(20);
const MAX_POLL_INTERVAL: &str = "8s";

/// Partitions of the writer's group: every mirrored topic, three partitions each
/// (`mesh::base_env`).
const PARTITIONS: usize = opsmesh_reporter::MIRRORED_TOPICS.len() * 3;

/// The writer group's `bus_consumer_lag` series a replica exports (one per partition it
/// holds) and their sum.
async fn lag_series(replica: &Service) -> (usize, f64) {
    let text = reqwest::get(replica.admin_url("/metrics"))
        .await
        .expect("metrics answered")
        .text()
        .await
        .unwrap_or_default();
    let series: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("opsmesh_bus_consumer_lag{") && l.contains("group=\"opsmesh-reporter\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (series.len(), series.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hec_outage_longer_than_max_poll_interval_loses_and_repeats_nothing() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    let logs = tempfile::tempdir().expect("log dir");
    // The tests' session timeout (6 s): tansu holds a follower's join for 3 s, so a session
    // much shorter makes a two-member group expire its followers and rebalance endlessly.
    let mut env = mesh::base_env(&broker, &hec);
    env.extend([
        (
            "OPSMESH__BUS__KAFKA__MAX_POLL_INTERVAL",
            MAX_POLL_INTERVAL.into(),
        ),
        // Small batches, one in flight: the writer is full (and pauses) early in the outage.
        ("OPSMESH__REPORTER__HEC__MAX_BATCH_EVENTS", "5".into()),
        ("OPSMESH__REPORTER__HEC__MAX_IN_FLIGHT", "1".into()),
        ("OPSMESH__REPORTER__HEC__RETRY_BACKOFF_MAX", "1s".into()),
        ("OPSMESH__BUS__KAFKA__STATS_INTERVAL", "1s".into()),
    ]);
    let mut replicas: Vec<Service> = (0..2)
        .map(|i| {
            Service::new(
                &format!("reporter-{i}"),
                opsmesh_tests::binary("opsmesh-reporter"),
                &[],
                &env,
                logs.path(),
            )
        })
        .collect();
    for replica in &mut replicas {
        replica.start();
    }
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    // The group is settled (each replica holds partitions, all of them are held) before the
    // outage: a rebalance while messages are in hand legitimately redelivers them.
    eventually("both replicas hold partitions", LIMIT, || async {
        let a = lag_series(&replicas[0]).await;
        let b = lag_series(&replicas[1]).await;
        (a.0 > 0 && b.0 > 0 && a.0 + b.0 == PARTITIONS).then_some(())
    })
    .await;
    let before = publish_alerts(&broker, 10).await;
    eventually("the first alerts in HEC", LIMIT, || async {
        let indexed = indexed_ids(&hec);
        before.iter().all(|id| indexed.contains(id)).then_some(())
    })
    .await;

    hec.set_mode(Mode::Busy);
    let mut published = before.clone();
    // Waves a linger apart, so that each writer seals batches while its first one retries.
    for _ in 0..10 {
        published.extend(publish_alerts(&broker, 10).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually("both writers hold messages", LIMIT, || async {
        let mut holding = 0;
        for replica in &replicas {
            let in_hand = replica
                .metric("opsmesh_reporter_hec_in_hand_messages", &[])
                .await;
            holding += usize::from(in_hand > 0.0);
        }
        (holding == 2).then_some(())
    })
    .await;
    // Fixed on purpose: the outage itself is what is tested, not a wait for a result.
    tokio::time::sleep(OUTAGE).await;
    hec.set_mode(Mode::Normal);

    eventually("every alert in HEC after the outage", LIMIT, || async {
        let indexed = indexed_ids(&hec);
        published
            .iter()
            .all(|id| indexed.contains(id))
            .then_some(())
    })
    .await;
    // Anything sent twice would have been sent by now: every offset is committed (the bus's
    // own lag gauge), and the writers hold nothing more.
    eventually("every offset committed, nothing in hand", LIMIT, || async {
        let mut left = 0.0;
        for replica in &replicas {
            let (series, lag) = lag_series(replica).await;
            left += lag
                + replica
                    .metric("opsmesh_reporter_hec_in_hand_messages", &[])
                    .await;
            if series == 0 {
                return None;
            }
        }
        (left == 0.0).then_some(())
    })
    .await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in indexed_ids(&hec) {
        *counts.entry(id).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} events indexed twice (a writer was evicted and its partitions handed over?): {repeated:?}",
        repeated.len()
    );
    assert_eq!(counts.len(), published.len(), "nothing else was indexed");
    for replica in &replicas {
        let log = replica.log_text();
        assert!(
            !log.contains("max.poll.interval") && !log.contains("MAXPOLL"),
            "a writer left its group for not polling:\n{log}"
        );
    }
}
