//! `opsmesh dlq list` and `opsmesh dlq replay` as an operator runs them, against a real
//! Kafka-protocol broker (tansu): a message a consumer gave up on is listed with why and from
//! where, replayed onto its topic with its key, bytes and headers, and not replayed twice.

use std::{process::Output, time::Duration};

use serde_json::{Value, json};

use opsmesh_proto::topics;
use opsmesh_runtime::{
    Bus, Received,
    bus::{HEADER_DLQ_ERROR, Outgoing},
};
use opsmesh_tests::{broker::Broker, eventually};

const TOPIC: &str = topics::APPROVALS;
const KEY: &str = "incident-7f3a";
const GROUP: &str = "opsmesh-approver";

/// Runs `opsmesh dlq` against `broker`; `replay` stops after 6 s without a message (`list`
/// reads up to the end offsets and needs no such wait).
async fn opsmesh(broker: &Broker, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(opsmesh_tests::binary("opsmesh"));
    command.arg("dlq").args(args);
    if args.first() == Some(&"replay") {
        command.args(["--idle", "6s"]);
    }
    command
        .env_clear()
        .env("OPSMESH__BUS__KAFKA__BROKERS", broker.address())
        .env("OPSMESH__LOG__LEVEL", "warn");
    let output = command.output().await.expect("opsmesh runs");
    assert!(
        output.status.success(),
        "opsmesh dlq {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Every message on `topic` now, read from the beginning by a fresh group.
async fn read_all(broker: &Broker, topic: &str) -> Vec<Received> {
    let bus = broker.bus();
    let group = format!("test-reader-{}", uuid::Uuid::now_v7());
    let mut sub = bus.subscribe(&group, &[topic]).await.unwrap();
    let mut out = Vec::new();
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(6), sub.recv()).await {
        out.push(next.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_replayed_onto_its_topic_and_not_replayed_twice() {
    let broker = Broker::memory();
    let bus = broker.bus();
    bus.ensure_topics(&[TOPIC.to_owned(), topics::dlq(TOPIC)])
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7();
    let payload = serde_json::to_vec(&json!({"schema": TOPIC, "id": id, "payload": {}})).unwrap();
    bus.publish(Outgoing {
        topic: TOPIC.into(),
        key: KEY.into(),
        payload: payload.clone(),
        headers: vec![
            ("opsmesh-schema".into(), TOPIC.as_bytes().into()),
            (
                "traceparent".into(),
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ),
        ],
    })
    .await
    .unwrap();

    // A consumer gives up on it and dead-letters it as the consume loop does (with the same
    // builder), then commits past it.
    let mut consumer = bus.subscribe(GROUP, &[TOPIC]).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("the message arrives")
        .unwrap();
    bus.publish(message.dead_letter("permanent", "approver unknown", GROUP))
        .await
        .unwrap();
    consumer.store(&message).unwrap();
    consumer.commit().await.unwrap();
    drop(consumer);

    let listed = eventually("the DLQ lists it", Duration::from_secs(60), || async {
        let out = stdout(&opsmesh(&broker, &["list", TOPIC, "--json"]).await);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(listed.len(), 1);
    let entry = &listed[0];
    assert!(
        entry["origin"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{TOPIC}/")),
        "{entry}"
    );
    assert!(
        entry["dlq"]
            .as_str()
            .unwrap()
            .starts_with(&topics::dlq(TOPIC))
    );
    assert_eq!(entry["group"], GROUP);
    assert_eq!(entry["error"], "permanent: approver unknown");
    assert_eq!(entry["key"], KEY);
    assert_eq!(entry["envelope_id"], id.to_string());
    assert_eq!(entry["envelope_type"], TOPIC);
    // The text form names the same things.
    let text = stdout(&opsmesh(&broker, &["list", TOPIC]).await);
    assert!(
        text.contains("error:    permanent: approver unknown"),
        "{text}"
    );
    assert!(
        text.contains(&format!("envelope: {id} ({TOPIC})")),
        "{text}"
    );

    // A dry run shows it and changes nothing.
    let dry = opsmesh(&broker, &["replay", TOPIC, "--dry-run"]).await;
    assert!(
        stdout(&dry).starts_with("would replay "),
        "{}",
        stdout(&dry)
    );
    assert!(stderr(&dry).contains("would replay 1 message(s)"));
    assert_eq!(read_all(&broker, TOPIC).await.len(), 1);

    let replayed = opsmesh(&broker, &["replay", TOPIC]).await;
    assert!(
        stderr(&replayed).contains(&format!(
            "replayed 1 message(s) from {} onto {TOPIC}",
            topics::dlq(TOPIC)
        )),
        "{}",
        stderr(&replayed)
    );
    let on_topic = read_all(&broker, TOPIC).await;
    assert_eq!(on_topic.len(), 2, "the original and its replay");
    let copy = on_topic
        .iter()
        .find(|m| m.header("opsmesh-replayed-from").is_some())
        .expect("the replayed copy");
    assert_eq!(copy.key.as_deref(), Some(KEY.as_bytes()));
    assert_eq!(copy.payload, payload, "the same bytes");
    assert_eq!(copy.header("opsmesh-schema"), Some(TOPIC.as_bytes()));
    assert!(copy.header("traceparent").is_some());
    assert!(
        copy.header(HEADER_DLQ_ERROR).is_none(),
        "DLQ headers removed"
    );
    assert!(
        copy.headers
            .iter()
            .all(|(k, _)| !k.starts_with("opsmesh-dlq-"))
    );
    let from = String::from_utf8(copy.header("opsmesh-replayed-from").unwrap().to_vec()).unwrap();
    assert_eq!(from, entry["dlq"].as_str().unwrap());

    // The replayer's group committed it: a second run replays nothing.
    let again = opsmesh(&broker, &["replay", TOPIC]).await;
    assert!(
        stderr(&again).contains("replayed 0 message(s)"),
        "{}",
        stderr(&again)
    );
    assert_eq!(read_all(&broker, TOPIC).await.len(), 2);
    // Listing still shows it: the DLQ keeps what was replayed.
    assert_eq!(
        stdout(&opsmesh(&broker, &["list", TOPIC, "--json"]).await)
            .lines()
            .count(),
        1
    );
}
