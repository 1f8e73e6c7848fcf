//! `opsmesh status` shows how many messages wait in a DLQ as the broker holds them, not what
//! the process dead-lettered since it started: on a real Kafka-protocol broker (tansu), a
//! diagnoser whose incident table is full dead-letters an alert; restarted with room (the fix),
//! it reports the DLQ's message as not replayed although it dead-lettered nothing itself; once
//! `opsmesh dlq replay` put it back and the diagnoser handled it, the DLQ's waiting count falls
//! to 0 while the DLQ still holds it. A poison message nobody will fix stops waiting once
//! `opsmesh dlq skip` marked it, without going back onto the topic.

use std::{
    process::Output,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

use opsmesh_proto::topics;
use opsmesh_runtime::{Bus, bus::Outgoing};
use opsmesh_tests::{broker::Broker, eventually, hec::HecServer, mesh::base_env, process::Service};

/// Runs the `opsmesh` binary with `args` against `broker`: whether it succeeded, and what it
/// printed (stdout, then stderr).
async fn run_opsmesh(broker: &Broker, args: &[&str]) -> (bool, String) {
    let output: Output = tokio::process::Command::new(opsmesh_tests::binary("opsmesh"))
        .args(args)
        .env_clear()
        .env("OPSMESH__BUS__KAFKA__BROKERS", broker.address())
        .env("OPSMESH__LOG__LEVEL", "warn")
        .output()
        .await
        .expect("opsmesh runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// What `opsmesh status` prints for `service` once the output shows each of `want` (sizes are
/// refreshed every second here, `bus.dlq.size_interval`). The service was ready (its incident
/// state loaded) before: status reports it ready (exits 0) every time.
async fn status_showing(broker: &Broker, service: &Service, want: &[&str]) -> String {
    let url = service.admin_url("");
    let started = Instant::now();
    loop {
        let (ready, out) = run_opsmesh(broker, &["status", "--url", &url]).await;
        assert!(ready, "opsmesh status: not ready after /readyz was:\n{out}");
        if want.iter().all(|w| out.contains(w)) {
            return out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "opsmesh status did not show {want:?} within 30s; last:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The golden alert as a fresh incident of its own about model `name`.
fn alert(name: &str) -> Outgoing {
    let mut envelope: Value =
        serde_json::from_str(include_str!("../../proto/examples/opsmesh.alerts.v1.json"))
            .expect("example JSON");
    let fingerprint = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    envelope["id"] = uuid::Uuid::now_v7().to_string().into();
    envelope["incident_id"] = fingerprint.clone().into();
    envelope["payload"]["fingerprint"] = fingerprint.clone().into();
    envelope["payload"]["entity"]["name"] = name.into();
    Outgoing {
        topic: topics::ALERTS.into(),
        key: fingerprint,
        payload: serde_json::to_vec(&envelope).expect("JSON"),
        headers: Vec::new(),
    }
}

fn diagnoser(
    broker: &Broker,
    hec: &HecServer,
    max_incidents: &str,
    logs: &std::path::Path,
) -> Service {
    let mut env = base_env(broker, hec);
    env.push(("OPSMESH__DIAGNOSER__MAX_INCIDENTS", max_incidents.into()));
    env.push(("OPSMESH__BUS__DLQ__SIZE_INTERVAL", "1s".into()));
    let binary = opsmesh_tests::binary("opsmesh-diagnoser");
    Service::new(
        &format!("diagnoser-{max_incidents}"),
        binary,
        &[],
        &env,
        logs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_dlq_size_across_a_restart_until_it_is_replayed() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    let logs = tempfile::tempdir().expect("log dir");
    let bus = broker.bus();
    let dlq = topics::dlq(topics::ALERTS);

    // Room for one open incident: the second alert about another model is refused, for good
    // (a permanent error), and dead-lettered.
    let mut full = diagnoser(&broker, &hec, "1", logs.path());
    full.start().wait_ready().await;
    bus.publish(alert("model-a")).await.expect("published");
    eventually(
        "the first incident opened",
        Duration::from_secs(60),
        || async {
            let handled = full
                .metric(
                    "opsmesh_bus_consumed_total",
                    &[("topic", topics::ALERTS), ("outcome", "handled")],
                )
                .await;
            (handled >= 1.0).then_some(())
        },
    )
    .await;
    bus.publish(alert("model-b")).await.expect("published");
    status_showing(
        &broker,
        &full,
        &[
            &format!("not replayed 1 ({dlq} 1); held 1"),
            &format!(
                "sent to DLQ 1 ({} 1) since this process started",
                topics::ALERTS
            ),
        ],
    )
    .await;

    // Restarted with room (the fix): it dead-lettered nothing itself, yet the DLQ's message
    // still waits.
    full.signal(Signal::SIGTERM);
    assert!(
        full.wait_exit(Duration::from_secs(30))
            .is_some_and(|status| status.success()),
        "the diagnoser stopped cleanly"
    );
    let mut roomy = diagnoser(&broker, &hec, "10", logs.path());
    roomy.start().wait_ready().await;
    let after_restart = status_showing(
        &broker,
        &roomy,
        &[&format!("not replayed 1 ({dlq} 1); held 1")],
    )
    .await;
    assert!(
        after_restart.contains("sent to DLQ none since this process started"),
        "{after_restart}"
    );

    // Replayed, and handled this time: nothing waits, the DLQ still holds it.
    let (ok, replayed) =
        run_opsmesh(&broker, &["dlq", "replay", topics::ALERTS, "--idle", "6s"]).await;
    assert!(ok, "opsmesh dlq replay failed: {replayed}");
    assert!(
        replayed.contains(&format!("replayed 1 message(s) from {dlq}")),
        "{replayed}"
    );
    eventually(
        "the replayed alert handled",
        Duration::from_secs(60),
        || async {
            let handled = roomy
                .metric(
                    "opsmesh_bus_consumed_total",
                    &[("topic", topics::ALERTS), ("outcome", "handled")],
                )
                .await;
            (handled >= 1.0).then_some(())
        },
    )
    .await;
    let after_replay = status_showing(
        &broker,
        &roomy,
        &["DLQ         not replayed 0; held 1 (replayed ones included)"],
    )
    .await;
    assert!(
        after_replay.contains("sent to DLQ none since this process started"),
        "the replayed alert was not dead-lettered again: {after_replay}"
    );

    // Poison waits until skipped; skipping does not put it back (no second dead letter).
    bus.publish(Outgoing {
        topic: topics::ALERTS.into(),
        key: "poison".into(),
        payload: b"not an envelope".to_vec(),
        headers: Vec::new(),
    })
    .await
    .expect("published");
    status_showing(
        &broker,
        &roomy,
        &[
            &format!("not replayed 1 ({dlq} 1); held 2"),
            &format!("sent to DLQ 1 ({} 1) since", topics::ALERTS),
        ],
    )
    .await;
    let (ok, skipped) =
        run_opsmesh(&broker, &["dlq", "skip", topics::ALERTS, "--idle", "6s"]).await;
    assert!(ok, "opsmesh dlq skip failed: {skipped}");
    assert!(
        skipped.contains(&format!("skipped 1 message(s) of {dlq}")),
        "{skipped}"
    );
    let after_skip = status_showing(&broker, &roomy, &["not replayed 0; held 2"]).await;
    assert!(
        after_skip.contains(&format!("sent to DLQ 1 ({} 1) since", topics::ALERTS)),
        "{after_skip}"
    );
}
