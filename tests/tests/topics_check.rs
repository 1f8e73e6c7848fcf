//! `opsmesh topics create` and `opsmesh topics check` as an operator runs them against a real
//! Kafka-protocol broker (tansu): topics are created with the table's retention and cleanup
//! policy, and a cluster whose topics differ from the table is reported topic by topic, with a
//! non-zero exit status.

use std::process::Output;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
};

use opsmesh_proto::topics;
use opsmesh_tests::broker::Broker;

async fn opsmesh(broker: &Broker, args: &[&str]) -> Output {
    tokio::process::Command::new(opsmesh_tests::binary("opsmesh"))
        .arg("topics")
        .args(args)
        .env_clear()
        .env("OPSMESH__BUS__KAFKA__BROKERS", broker.address())
        .env("OPSMESH__LOG__LEVEL", "warn")
        .output()
        .await
        .expect("opsmesh runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The line `topics check` printed for `topic`.
fn line<'o>(report: &'o str, topic: &str) -> &'o str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1).map(|t| t.trim_end_matches(':')) == Some(topic))
        .unwrap_or_else(|| panic!("no line for {topic} in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_topics_carry_the_declared_settings_and_check_clean() {
    let broker = Broker::memory();
    let created = opsmesh(&broker, &["create"]).await;
    assert!(created.status.success(), "{created:?}");

    let checked = opsmesh(&broker, &["check"]).await;
    let report = stdout(&checked);
    assert_eq!(checked.status.code(), Some(0), "{report}\n{checked:?}");
    for name in topics::all_topic_names() {
        assert!(line(&report, &name).starts_with("ok "), "{report}");
    }
    assert!(report.contains("0 drifted"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_drifted_topic_and_setting_is_named_and_the_exit_status_says_so() {
    let broker = Broker::memory();
    // Provisioned by hand, as an operator or an older release did: the incidents topic with
    // broker-style settings instead of compaction, the alerts topic with too few partitions,
    // and every other topic missing.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let incidents = NewTopic::new(topics::INCIDENTS, 6, TopicReplication::Fixed(1))
        .set("retention.ms", "604800000")
        .set("cleanup.policy", "delete");
    let alerts = NewTopic::new(topics::ALERTS, 2, TopicReplication::Fixed(1))
        .set("retention.ms", "604800000")
        .set("cleanup.policy", "delete");
    for result in admin
        .create_topics([&incidents, &alerts], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }

    let checked = opsmesh(&broker, &["check"]).await;
    let report = stdout(&checked);
    assert_eq!(checked.status.code(), Some(1), "{report}\n{checked:?}");
    assert_eq!(
        line(&report, topics::INCIDENTS),
        "DRIFT opsmesh.incidents.v1: retention.ms is 604800000, declared 2592000000; \
         cleanup.policy is delete, declared compact"
    );
    assert_eq!(
        line(&report, topics::ALERTS),
        "DRIFT opsmesh.alerts.v1: 2 partitions, expected at least 6 (bus.kafka.partitions)"
    );
    assert_eq!(
        line(&report, &topics::dlq(topics::ALERTS)),
        "DRIFT opsmesh.alerts.v1.dlq: missing"
    );

    // `create` adds what is missing and leaves existing topics alone: they still drift.
    let created = opsmesh(&broker, &["create"]).await;
    assert!(created.status.success(), "{created:?}");
    let checked = opsmesh(&broker, &["check"]).await;
    let report = stdout(&checked);
    assert_eq!(checked.status.code(), Some(1), "{report}");
    assert!(line(&report, &topics::dlq(topics::ALERTS)).starts_with("ok "));
    assert!(line(&report, topics::INCIDENTS).starts_with("DRIFT "));
    assert!(report.contains("2 drifted"), "{report}");
}

#[tokio::test]
async fn check_explains_itself() {
    let output = tokio::process::Command::new(opsmesh_tests::binary("opsmesh"))
        .args(["topics", "check", "--help"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = stdout(&output);
    for needle in [
        "retention.ms",
        "cleanup.policy",
        "partitions",
        "Exit status",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
