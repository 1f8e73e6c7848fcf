//! Kafka authentication end to end, against tansu with SASL/SCRAM-SHA-512 required: a bus
//! configured through `bus.kafka.security` with the right password (read from a file, as a
//! mounted Secret would be) produces and consumes, in a consumer group and through a topic
//! reader; one with a wrong password gets an authentication error from readiness and from
//! publish, not a bare timeout; one without credentials gets nothing at all.
//!
//! tansu 0.6 verifies SCRAM passwords but accepts any password for PLAIN, so only SCRAM is
//! tested here (SECURITY.md). TLS and mTLS are covered by the configuration tests of
//! `opsmesh_runtime::bus::kafka::security`: tansu's TLS listener is not part of this suite.

use std::{path::Path, time::Duration};

use opsmesh_runtime::{
    Bus,
    bus::{
        BusError, KafkaBus, KafkaSecurity, KafkaSettings, Outgoing, ReadEvent, SaslMechanism,
        SaslSettings, SecurityProtocol,
    },
    config::Validate,
};
use opsmesh_tests::broker::{Broker, ScramUser};

const LIMIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "opsmesh.auth-test.v1";

fn user() -> ScramUser {
    ScramUser {
        name: "opsmesh-alert-receiver".into(),
        password: "correct horse battery staple".into(),
    }
}

/// Bus settings for `broker` as `username`, the password read from a file under `dir`.
fn scram_settings(broker: &Broker, dir: &Path, username: &str, password: &str) -> KafkaSettings {
    let password_file = dir.join(format!("{username}.password"));
    // As `kubectl create secret --from-file` leaves it: with a trailing newline.
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    KafkaSettings {
        fetch_wait_max: Duration::from_millis(100),
        message_timeout: Duration::from_secs(5),
        security: KafkaSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: SaslSettings {
                mechanism: Some(SaslMechanism::ScramSha512),
                username: Some(username.into()),
                password_file: Some(password_file),
                ..SaslSettings::default()
            },
            ..KafkaSecurity::default()
        },
        ..broker.kafka_settings()
    }
}

fn record(n: u32) -> Outgoing {
    Outgoing {
        topic: TOPIC.into(),
        key: format!("key-{n}"),
        payload: format!("payload-{n}").into_bytes(),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_scram_credentials_produce_and_consume() {
    let user = user();
    let broker = Broker::sqlite_with_scram(std::slice::from_ref(&user));
    let dir = tempfile::tempdir().unwrap();
    let settings = scram_settings(&broker, dir.path(), &user.name, &user.password);
    settings
        .validate("bus.kafka")
        .expect("the settings are valid");
    let bus = KafkaBus::new(&settings, "kafka-auth-test").unwrap();

    bus.check()
        .await
        .expect("readiness as an authenticated client");
    bus.ensure_topics(&[TOPIC.to_owned()]).await.unwrap();
    bus.publish(record(1)).await.expect("publish authenticated");

    let mut group = bus.subscribe("opsmesh-auth-test", &[TOPIC]).await.unwrap();
    let received = tokio::time::timeout(LIMIT, group.recv())
        .await
        .expect("a message within the limit")
        .expect("consume authenticated");
    assert_eq!(received.payload, b"payload-1");

    let mut reader = bus.read_topic(TOPIC).await.expect("reader authenticated");
    let event = tokio::time::timeout(LIMIT, reader.next())
        .await
        .expect("an event within the limit")
        .expect("read authenticated");
    assert!(
        matches!(&event, ReadEvent::Record(r) if r.payload == b"payload-1"),
        "{event:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_as_an_authentication_failure() {
    let user = user();
    let broker = Broker::sqlite_with_scram(std::slice::from_ref(&user));
    let dir = tempfile::tempdir().unwrap();
    let settings = scram_settings(&broker, dir.path(), &user.name, "not the password");
    let bus = KafkaBus::new(&settings, "kafka-auth-test").unwrap();

    let err = bus.check().await.expect_err("readiness must fail");
    assert!(matches!(err, BusError::Authentication(_)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("refused opsmesh's credentials"), "{shown}");
    assert!(shown.contains("bus.kafka.security"), "{shown}");
    assert!(
        !shown.contains("not the password"),
        "the password leaked: {shown}"
    );

    let err = bus.publish(record(2)).await.expect_err("publish must fail");
    assert!(matches!(err, BusError::Authentication(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_and_a_client_without_credentials_are_refused() {
    let user = user();
    let broker = Broker::sqlite_with_scram(std::slice::from_ref(&user));
    let dir = tempfile::tempdir().unwrap();

    let stranger = scram_settings(&broker, dir.path(), "opsmesh-intruder", &user.password);
    let err = KafkaBus::new(&stranger, "kafka-auth-test")
        .unwrap()
        .check()
        .await
        .expect_err("an unknown user must not get metadata");
    assert!(matches!(err, BusError::Authentication(_)), "{err}");

    let anonymous = KafkaSettings {
        request_timeout: Duration::from_secs(2),
        ..broker.kafka_settings()
    };
    let err = KafkaBus::new(&anonymous, "kafka-auth-test")
        .unwrap()
        .check()
        .await
        .expect_err("an unauthenticated client must not get metadata");
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
}
