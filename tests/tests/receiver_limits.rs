//! The receiver on Kafka (tansu) with a small `bus.kafka.message_max_bytes`: an alert whose
//! message cannot fit is refused `413` naming the limit, over real HTTP, instead of a `503`
//! that senders would retry until the alert is lost; one that fits is stored.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use opsmesh_alert_receiver::{Receiver, ReceiverConfig, SIGNATURE_HEADER, config::SourceConfig};
use opsmesh_proto::topics;
use opsmesh_runtime::{
    Application, Bus, Context, Settings,
    bus::{BusError, KafkaBus, KafkaSettings, Outgoing},
};
use opsmesh_tests::broker::Broker;

const LIMIT: usize = 4000;
const SECRET: &str = "splunk-secret";

fn settings(broker: &Broker) -> KafkaSettings {
    KafkaSettings {
        message_max_bytes: LIMIT,
        ..broker.kafka_settings()
    }
}

fn message(payload_bytes: usize) -> Outgoing {
    Outgoing {
        topic: topics::ALERTS.into(),
        key: "k".into(),
        payload: vec![b'x'; payload_bytes],
        headers: vec![("opsmesh-schema".into(), topics::ALERTS.as_bytes().into())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_up_to_the_limit_are_stored_and_larger_ones_are_too_large() {
    let broker = Broker::memory();
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&settings(&broker), "opsmesh-test").unwrap());
    bus.ensure_topics(&[topics::ALERTS.to_owned()])
        .await
        .unwrap();
    let publisher = Context::new(Settings::default(), bus.clone()).publisher;

    // The size the publisher counts is never below librdkafka's: a message of exactly the
    // limit is accepted by the producer and the broker.
    let mut at_limit = message(LIMIT);
    at_limit.payload.truncate(LIMIT - (at_limit.size() - LIMIT));
    assert_eq!(at_limit.size(), LIMIT);
    publisher
        .publish_raw(at_limit)
        .await
        .expect("a message of the limit is stored");

    let over = message(LIMIT);
    match publisher.publish_raw(over.clone()).await {
        Err(BusError::TooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (over.size(), Some(LIMIT)));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The producer's own refusal, past the publisher's check, is the same permanent error.
    let err = bus.publish(message(2 * LIMIT)).await.unwrap_err();
    assert!(
        matches!(
            err,
            BusError::TooLarge {
                limit: Some(LIMIT),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_too_large_for_kafka_is_refused_413_and_a_small_one_is_stored() {
    let broker = Broker::memory();
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&settings(&broker), "opsmesh-test").unwrap());
    bus.ensure_topics(&[topics::ALERTS.to_owned()])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("splunk.secrets");
    std::fs::write(&secrets, SECRET).unwrap();
    let mut config = ReceiverConfig::default();
    config.sources.insert(
        "splunk".into(),
        SourceConfig {
            secrets_file: Some(secrets),
            ..SourceConfig::default()
        },
    );
    let mut service = Settings::default();
    service.http.listen = "127.0.0.1:0".parse().unwrap();
    service.http.admin_listen = "127.0.0.1:0".parse().unwrap();
    let ctx = Context::new(service, bus);
    let receiver = Receiver::new(config, &ctx).unwrap();
    let app = Application::build(ctx, vec![Arc::new(receiver)]).unwrap();
    let url = format!("http://{}/v1/alerts/splunk", app.local_addr());
    let stop = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    let _stop = stop.drop_guard();

    let post = |rows_bytes: usize| {
        let body = serde_json::to_vec(&json!({
            "sid": format!("scheduler__admin__search__RMD5limits_at_1718035500_{rows_bytes}"),
            "search_name": "KServe model error rate above 5%",
            "rows": [{"model_name": "gpt-oss-120b", "namespace": "ml-team-a",
                      "message": "x".repeat(rows_bytes)}],
        }))
        .unwrap();
        let signature = opsmesh_alert_receiver::sign(SECRET, chrono::Utc::now().timestamp(), &body);
        let url = url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("Content-Type", "application/json")
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, problem) = post(2 * LIMIT).await;
    assert_eq!(status, 413, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "limit is {LIMIT} bytes (bus.kafka.message_max_bytes)"
        )),
        "{detail}"
    );
    let (status, reply) = post(100).await;
    assert_eq!(status, 202, "{reply}");
}
