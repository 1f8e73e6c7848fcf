//! The five services as separate processes over a real Kafka-protocol broker (tansu).

use std::{collections::HashSet, time::Duration};

use nix::sys::signal::Signal;
use serde_json::Value;

use opsmesh_proto::topics;
use opsmesh_runtime::{
    Bus,
    bus::{HEADER_DLQ_ERROR, HEADER_DLQ_ORIGIN, Outgoing},
};
use opsmesh_tests::{
    broker::Broker,
    eventually,
    hec::HecServer,
    mesh::{Mesh, incident_complete, signed_post, webhook_alert},
};

const LIMIT: Duration = Duration::from_secs(90);

/// Reads every message currently on `topic` (from the beginning) with a fresh group.
async fn read_topic(
    broker: &Broker,
    topic: &str,
    expect_at_least: usize,
) -> Vec<opsmesh_runtime::Received> {
    let bus = broker.bus();
    let group = format!("test-reader-{}", uuid::Uuid::now_v7());
    let mut sub = bus.subscribe(&group, &[topic]).await.expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while out.len() < expect_at_least {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Ok(m)) => out.push(m),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!(
                "only {} of {expect_at_least} messages on {topic}",
                out.len()
            ),
        }
    }
    // Anything else already there arrives promptly.
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), sub.recv()).await {
        out.push(m);
    }
    out
}

fn envelope_id(message: &opsmesh_runtime::Received) -> String {
    let value: Value = serde_json::from_slice(&message.payload).expect("envelope JSON");
    value["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_splunk_alert_crosses_five_processes_to_hec() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    let mesh = Mesh::start(&broker, &hec, &[]).await;

    let sample = std::fs::read_to_string(opsmesh_tests::sample("splunk-webhook.json")).unwrap();
    let body: Value = serde_json::from_str(&sample).unwrap();
    let (status, reply) = mesh.post_splunk(&body).await.expect("receiver answers");
    assert_eq!(status, 202, "{reply}");
    let incident = reply["incident_key"]
        .as_str()
        .expect("incident key")
        .to_owned();

    eventually("alert, diagnosis and decision in HEC", LIMIT, || async {
        incident_complete(&hec, &incident).then_some(())
    })
    .await;
    let events = hec.incident(&incident);
    let count = |sourcetype: &str| {
        events
            .iter()
            .filter(|e| e["sourcetype"] == sourcetype)
            .count()
    };
    assert_eq!(
        (count("opsmesh:alert"), count("opsmesh:diagnosis")),
        (1, 1),
        "{events:#?}"
    );
    // The remediator writes one audit-ledger record per step, each once.
    let ledger: Vec<&Value> = events
        .iter()
        .filter(|e| e["sourcetype"] == "opsmesh:remediation")
        .collect();
    let ids: HashSet<&str> = ledger
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ledger.len(), "no ledger record twice");
    assert_eq!(
        ledger.last().unwrap()["event"]["payload"]["state"],
        "escalated"
    );
    for event in &events {
        assert_eq!(event["index"], "opsmesh");
        assert_eq!(event["event"]["incident_id"], incident.as_str());
        assert_eq!(event["fields"]["cluster"], "test-cluster");
    }
    let alert = &events
        .iter()
        .find(|e| e["sourcetype"] == "opsmesh:alert")
        .unwrap()["event"];
    assert_eq!(alert["payload"]["sid"], body["sid"]);
    assert_eq!(alert["payload"]["entity"]["name"], "gpt-oss-120b");
    assert_eq!(alert["payload"]["entity"]["namespace"], "ml-team-a");

    // An outside consumer sees exactly the envelope: `opsmesh tail` prints it as a JSON line.
    let tail = std::process::Command::new(opsmesh_tests::binary("opsmesh"))
        .args([
            "tail",
            topics::DIAGNOSES,
            "--from-beginning",
            "--limit",
            "1",
        ])
        .env_clear()
        .env("OPSMESH__BUS__KAFKA__BROKERS", broker.address())
        .output()
        .expect("opsmesh tail runs");
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let line = String::from_utf8(tail.stdout).unwrap();
    let diagnosis: Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(diagnosis["schema"], topics::DIAGNOSES);
    assert_eq!(diagnosis["incident_id"], incident.as_str());
    let in_hec = &events
        .iter()
        .find(|e| e["sourcetype"] == "opsmesh:diagnosis")
        .unwrap()["event"];
    assert_eq!(&diagnosis, in_hec, "HEC carries the envelope unchanged");
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_before_committing_reprocesses_without_duplicate_effects() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    // Offsets of the diagnoser are committed only every minute: a SIGKILL in between loses
    // the commit but not the work already published.
    let mut mesh = Mesh::start(
        &broker,
        &hec,
        &[("diagnoser", "OPSMESH__BUS__KAFKA__COMMIT_INTERVAL", "60s")],
    )
    .await;
    // The remediator is down while the diagnoser is killed, so the incident is still open
    // when the alert is handled again (the opening alert of a closed incident is ignored).
    mesh.service("remediator").kill();
    let (status, reply) = mesh
        .post_splunk(&webhook_alert("killed-model"))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let incident = reply["incident_key"].as_str().unwrap().to_owned();
    eventually("the diagnosis is in HEC", LIMIT, || async {
        hec.sourcetypes(&incident)
            .iter()
            .any(|t| t == "opsmesh:diagnosis")
            .then_some(())
    })
    .await;

    let diagnoser = mesh.service("diagnoser");
    diagnoser.kill();
    // Restarted at once, while the broker still lists the dead member.
    diagnoser.start();
    diagnoser.wait_ready().await;

    // The restarted diagnoser handled the alert again: two diagnoses, one id.
    let diagnoses = read_topic(&broker, topics::DIAGNOSES, 2).await;
    let ids: Vec<String> = diagnoses.iter().map(envelope_id).collect();
    assert_eq!(ids.len(), 2, "the alert was handled twice: {ids:?}");
    assert_eq!(ids[0], ids[1], "re-handling produced the same envelope id");
    let remediator = mesh.service("remediator");
    remediator.start();
    remediator.wait_ready().await;
    eventually("the incident is decided", LIMIT, || async {
        incident_complete(&hec, &incident).then_some(())
    })
    .await;

    // Downstream dropped the repeat: the remediator and the reporter saw a duplicate...
    let remediator = &mesh.services["remediator"];
    let reporter = &mesh.services["reporter"];
    eventually(
        "remediator and reporter drop the duplicate",
        LIMIT,
        || async {
            let r = remediator
                .metric("opsmesh_bus_consumed_total", &[("outcome", "duplicate")])
                .await;
            let h = reporter
                .metric("opsmesh_bus_consumed_total", &[("outcome", "duplicate")])
                .await;
            (r >= 1.0 && h >= 1.0).then_some(())
        },
    )
    .await;
    // ...so the remediator decided once (every ledger record published once) and HEC holds
    // the alert and the diagnosis once each.
    let decisions = read_topic(&broker, topics::REMEDIATIONS, 1).await;
    let ids: HashSet<String> = decisions.iter().map(envelope_id).collect();
    assert_eq!(
        ids.len(),
        decisions.len(),
        "no ledger record published twice"
    );
    let types = hec.sourcetypes(&incident);
    let count = |t: &str| types.iter().filter(|have| *have == t).count();
    assert_eq!(
        (count("opsmesh:alert"), count("opsmesh:diagnosis")),
        (1, 1),
        "{types:?}"
    );
    assert_eq!(count("opsmesh:remediation"), decisions.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_goes_to_the_dlq_and_the_consumer_keeps_going() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    let mesh = Mesh::start(&broker, &hec, &[]).await;
    let bus = broker.bus();
    let poison = b"{\"this is\": not an envelope".to_vec();
    bus.publish(Outgoing {
        topic: topics::ALERTS.into(),
        key: "poison".into(),
        payload: poison.clone(),
        headers: vec![("origin".into(), b"test".into())],
    })
    .await
    .expect("poison published");

    let (status, reply) = mesh
        .post_splunk(&webhook_alert("after-poison"))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let incident = reply["incident_key"].as_str().unwrap().to_owned();
    eventually("the next alert is diagnosed", LIMIT, || async {
        incident_complete(&hec, &incident).then_some(())
    })
    .await;

    let dead = read_topic(&broker, &topics::dlq(topics::ALERTS), 2).await;
    // Every consumer group of the alerts topic dead-letters it once: the diagnoser, the
    // reporter's HEC writer, and the reporter's per-replica incident timeline.
    let groups: Vec<String> = dead
        .iter()
        .map(|m| String::from_utf8_lossy(m.header("opsmesh-dlq-group").unwrap()).into_owned())
        .collect();
    let distinct: HashSet<&String> = groups.iter().collect();
    assert_eq!(distinct.len(), groups.len(), "once per group: {groups:?}");
    assert!(
        groups.iter().any(|g| g == "opsmesh-diagnoser"),
        "{groups:?}"
    );
    assert!(groups.iter().any(|g| g == "opsmesh-reporter"), "{groups:?}");
    for message in &dead {
        assert_eq!(message.payload, poison, "original bytes kept");
        assert_eq!(
            message.header("origin").unwrap(),
            b"test",
            "original headers kept"
        );
        let error = String::from_utf8_lossy(message.header(HEADER_DLQ_ERROR).unwrap());
        assert!(
            error.starts_with("poison: not an opsmesh envelope"),
            "{error}"
        );
        let origin = String::from_utf8_lossy(message.header(HEADER_DLQ_ORIGIN).unwrap());
        assert!(origin.starts_with("opsmesh.alerts.v1/"), "{origin}");
    }
}

/// Posts alerts until told to stop; returns the incident keys answered 202.
async fn post_stream(
    mesh_url: String,
    prefix: &'static str,
    stop: tokio_util_stop::Stop,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    let mut n = 0;
    while !stop.is_set() {
        n += 1;
        let body = webhook_alert(&format!("{prefix}-{n}"));
        if let Ok(response) = signed_post(&client, &mesh_url, &body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            && response.status() == 202
        {
            let reply: Value = response.json().await.unwrap();
            accepted.push(reply["incident_key"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    accepted
}

mod tokio_util_stop {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    #[derive(Clone, Default)]
    pub struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub fn set(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
        pub fn is_set(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_stream_exits_zero_within_grace_and_loses_nothing() {
    let broker = Broker::memory();
    let hec = HecServer::start().await;
    let mut mesh = Mesh::start(&broker, &hec, &[]).await;
    let stop = tokio_util_stop::Stop::default();
    let stream = tokio::spawn(post_stream(
        mesh.services["alert-receiver"].url("/v1/alerts/splunk"),
        "term",
        stop.clone(),
    ));
    eventually("the stream is flowing", LIMIT, || async {
        (hec.events().len() >= 15).then_some(())
    })
    .await;

    for service in mesh.services.values() {
        service.signal(Signal::SIGTERM);
    }
    for (name, service) in mesh.services.iter_mut() {
        // The grace period is 15s; allow a little for process teardown.
        let status = service
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{name} did not exit within the grace period"));
        assert!(
            status.success(),
            "{name} exited with {status}:\n{}",
            service.log_text()
        );
    }
    stop.set();
    let accepted = stream.await.unwrap();
    assert!(
        accepted.len() >= 5,
        "the stream was mid-flight: {}",
        accepted.len()
    );

    // Whatever was acknowledged is on the bus: restarted consumers finish every incident.
    for name in ["diagnoser", "remediator", "reporter"] {
        mesh.service(name).start();
    }
    for name in ["diagnoser", "remediator", "reporter"] {
        mesh.service(name).wait_ready().await;
    }
    eventually(
        "every acknowledged alert completes after restart",
        LIMIT,
        || async {
            accepted
                .iter()
                .all(|i| incident_complete(&hec, i))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_reconnect_after_a_broker_restart_and_lose_nothing() {
    let mut broker = Broker::sqlite();
    let hec = HecServer::start().await;
    let mesh = Mesh::start(&broker, &hec, &[]).await;
    let url = mesh.services["alert-receiver"].url("/v1/alerts/splunk");
    let stop = tokio_util_stop::Stop::default();
    let stream = tokio::spawn(post_stream(url, "restart", stop.clone()));
    eventually("the stream is flowing", LIMIT, || async {
        (hec.events().len() >= 15).then_some(())
    })
    .await;

    broker.restart();
    // Let traffic continue across the restart: the receiver answers 503 while the broker is
    // away and 202 again once it is back.
    let before = hec.events().len();
    eventually("events flow again after the restart", LIMIT, || async {
        (hec.events().len() >= before + 15).then_some(())
    })
    .await;
    stop.set();
    let accepted = stream.await.unwrap();
    eventually("every acknowledged alert completes", LIMIT, || async {
        accepted
            .iter()
            .all(|i| incident_complete(&hec, i))
            .then_some(())
    })
    .await;
    drop(mesh);
}
