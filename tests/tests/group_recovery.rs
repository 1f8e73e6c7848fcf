//! A consumer SIGKILLed and restarted at once (well within its session timeout) consumes
//! again on its own, on a real Kafka-protocol broker (tansu): the broker may still list the
//! dead member when the new one joins (tansu 0.6 then forms the group with an empty
//! assignment), and the consumer must notice that it holds nothing and rejoin.

use std::{collections::HashSet, time::Duration};

use opsmesh_tests::{
    broker::Broker,
    eventually,
    hec::HecServer,
    mesh::{self, indexed_ids, publish_alerts},
    process::Service,
};

/// Bound on "consumes again": the rejoin period (default 15 s) plus the session timeout plus
/// a rebalance, with room for a slow machine. Without the rejoin it never does (on SQLite
/// storage with a 4 s session, the first restart strands the member).
const LIMIT: Duration = Duration::from_secs(90);

async fn all_indexed(hec: &HecServer, ids: &HashSet<String>, what: &str) {
    eventually(what, LIMIT, || async {
        let indexed: HashSet<String> = indexed_ids(hec).into_iter().collect();
        indexed.is_superset(ids).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_and_restarted_at_once_consumes_again() {
    let broker = Broker::sqlite();
    let hec = HecServer::start().await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut env = mesh::base_env(&broker, &hec);
    // A short session: a newcomer's first sync (tansu holds a follower's join for 3 s) comes
    // after the dead member's session expired, which is when tansu 0.6 strands it.
    env.push(("OPSMESH__BUS__KAFKA__SESSION_TIMEOUT", "4s".into()));
    let mut reporter = Service::new(
        "reporter",
        opsmesh_tests::binary("opsmesh-reporter"),
        &[],
        &env,
        logs.path(),
    );
    reporter.start();
    reporter.wait_ready().await;
    let first = publish_alerts(&broker, 20).await;
    all_indexed(&hec, &first, "the first alerts in HEC").await;

    for (round, delay_ms) in [(1, 1000u64), (2, 500), (3, 1000)] {
        // SIGKILL: no LeaveGroup; the broker still lists the dead member for a session.
        reporter.kill();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        reporter.start();
        reporter.wait_ready().await;
        let after = publish_alerts(&broker, 20).await;
        all_indexed(
            &hec,
            &after,
            &format!("the alerts published after restart {round} in HEC"),
        )
        .await;
        // How it came back (at once, after the session expired, or by rejoining) depends on
        // timing; that it came back is the point.
        let rejoins = reporter.metric("opsmesh_bus_rejoins_total", &[]).await;
        eprintln!("restart {round}: {} rejoins", rejoins.abs());
    }
}
