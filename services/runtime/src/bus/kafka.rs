//! Kafka via rdkafka: idempotent producer with `acks=all`; group consumers that store offsets
//! only after handling, commit on revoke and on shutdown (see `group` for the consumers).

mod admin;
mod auth;
mod group;
mod offsets;
mod reader;
mod security;

pub use admin::TopicDescription;
pub use security::{KafkaSecurity, SaslMechanism, SaslSettings, SecurityProtocol, TlsSettings};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use rdkafka::{
    ClientConfig,
    error::RDKafkaErrorCode,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};
use serde::Deserialize;

use super::{
    Bus, BusError, ClientOverrides, Delivered, EndOffsets, Outgoing, Subscription, TopicReader,
    Watermarks,
};
use crate::config::{ConfigError, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Partitions of topics created at start.
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long the producer keeps trying to deliver before `publish` fails.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// How long the producer waits to batch messages before sending (`linger.ms`). Each
    /// `202` waits for its batch's acknowledgement, so this adds to the receiver's latency
    /// and, at a fixed number of concurrent senders, caps its rate; sub-millisecond values
    /// (`"500us"`) are allowed.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How often stored offsets are committed (also committed on revoke and shutdown).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// A member that does not ask for messages for this long leaves its group; also the
    /// longest a rebalance waits for members. Must exceed the longest handler run.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// Longest a fetch waits at the broker for new data. Apache Kafka answers as soon as
    /// data arrives; some Kafka-compatible brokers (tansu) hold every fetch for the full
    /// time, and each of an incident's three hops then costs up to 1.5 times this. The 10 ms
    /// default keeps alert -> HEC near 40 ms there at the price of an empty fetch per
    /// consumer every 10 ms when idle; on Apache Kafka 100-500 ms costs no latency.
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// Timeout of metadata and admin requests (readiness, topic creation).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest message the producer sends (`message.max.bytes`); keep it at or below the
    /// broker's own limit. The alert receiver answers `413` for an alert whose envelope
    /// would exceed it, instead of retrying a publish that can never succeed.
    pub message_max_bytes: usize,
    /// Static group membership (`group.instance.id`): a consumer restarted under the same id
    /// takes its old place at once, without a rebalance. Unique per replica (in Kubernetes,
    /// the pod name); unset means dynamic membership. A process's second consumer in one
    /// group gets `<instance_id>-2`, and so on.
    pub instance_id: Option<String>,
    /// A consumer that a rebalance left holding no partition for this long, in a group with no
    /// more members than its largest topic has partitions, rejoins the group (some brokers,
    /// tansu 0.6, form a group around a dead member's stale entry). `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub rejoin_idle_after: Duration,
    /// How often consumers refresh `bus_consumer_lag` (librdkafka statistics); `0s` turns it
    /// off.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// How to authenticate to the brokers: TLS, mTLS, SASL (`bus.kafka.security`).
    pub security: KafkaSecurity,
    /// Extra librdkafka properties, applied last; not those `security` owns.
    pub client: ClientOverrides,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            partitions: 6,
            replication_factor: 1,
            message_timeout: Duration::from_secs(30),
            linger: Duration::from_micros(500),
            commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            request_timeout: Duration::from_secs(5),
            fetch_wait_max: Duration::from_millis(10),
            // librdkafka's default, and below Apache Kafka's broker default (1 MiB + 12 B).
            message_max_bytes: 1_000_000,
            instance_id: None,
            rejoin_idle_after: Duration::from_secs(15),
            stats_interval: Duration::from_secs(10),
            security: KafkaSecurity::default(),
            client: ClientOverrides::new(),
        }
    }
}

impl Validate for KafkaSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{prefix}.brokers"),
                "required when bus.kind = \"kafka\" (e.g. \"127.0.0.1:9092\")",
            ));
        }
        if self.partitions < 1 {
            return Err(ConfigError::invalid(
                format!("{prefix}.partitions"),
                "must be at least 1",
            ));
        }
        if self.replication_factor < 1 {
            return Err(ConfigError::invalid(
                format!("{prefix}.replication_factor"),
                "must be at least 1",
            ));
        }
        if self.max_poll_interval < self.session_timeout {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_poll_interval"),
                "must be at least session_timeout",
            ));
        }
        if self.linger > Duration::from_secs(900) {
            return Err(ConfigError::invalid(
                format!("{prefix}.linger"),
                "must be at most 900s (librdkafka's linger.ms limit)",
            ));
        }
        // librdkafka accepts 1000 ..= 1_000_000_000.
        if !(1000..=1_000_000_000).contains(&self.message_max_bytes) {
            return Err(ConfigError::invalid(
                format!("{prefix}.message_max_bytes"),
                "must be between 1000 and 1000000000",
            ));
        }
        if self
            .instance_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 200)
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.instance_id"),
                "must be 1 to 200 characters (or unset)",
            ));
        }
        if self.commit_interval.is_zero() {
            return Err(ConfigError::invalid(
                format!("{prefix}.commit_interval"),
                "must be > 0",
            ));
        }
        self.security.validate(prefix, &self.client)
    }
}

pub struct KafkaBus {
    settings: KafkaSettings,
    client_id: String,
    producer: FutureProducer<auth::AuthWatch>,
    auth: auth::AuthWatch,
    group_metrics: group::GroupMetrics,
    /// Consumers of this process per group, to give each its own `group.instance.id`.
    members: Mutex<HashMap<String, usize>>,
    commit_readers: Arc<offsets::CommitReaders>,
}

impl KafkaBus {
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self, BusError> {
        let auth = auth::AuthWatch::default();
        let producer = base_config(settings, client_id)?
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "linger.ms",
                (settings.linger.as_secs_f64() * 1e3).to_string(),
            )
            .set("message.timeout.ms", millis(settings.message_timeout))
            .set("message.max.bytes", settings.message_max_bytes.to_string())
            .set_all(&settings.client)
            .create_with_context(auth.clone())
            .map_err(|e| BusError::Client(e.to_string()))?;
        Ok(Self {
            settings: settings.clone(),
            client_id: client_id.to_owned(),
            producer,
            auth,
            group_metrics: group::GroupMetrics::new(),
            members: Mutex::new(HashMap::new()),
            commit_readers: Arc::default(),
        })
    }

    /// `error` as it is, or as an authentication failure if the brokers refused our
    /// credentials since the last request that went through.
    fn explain(&self, error: BusError) -> BusError {
        match self.auth.failure() {
            Some(reason) => BusError::Authentication(reason),
            None => error,
        }
    }

    /// `group.instance.id` of this process's next consumer in `group`, if static.
    fn instance_id(&self, group: &str) -> Option<String> {
        let id = self.settings.instance_id.as_deref()?;
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let n = members.entry(group.to_owned()).or_insert(0);
        *n += 1;
        Some(if *n == 1 {
            id.to_owned()
        } else {
            format!("{id}-{n}")
        })
    }
}

pub(super) fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// What every client (producer, consumers, readers, admin) shares: the brokers, timeouts and
/// how to authenticate. Fails when a secret cannot be read.
pub(super) fn base_config(
    settings: &KafkaSettings,
    client_id: &str,
) -> Result<ClientConfig, BusError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        .set(
            "socket.timeout.ms",
            millis(settings.request_timeout.max(Duration::from_secs(10))),
        )
        // Reconnect quickly after a broker restart.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000");
    let security = settings
        .security
        .properties("bus.kafka")
        .map_err(|e| BusError::Client(e.to_string()))?;
    for property in security {
        config.set(property.name, property.value);
    }
    Ok(config)
}

pub(super) trait SetAll {
    fn set_all(&mut self, overrides: &ClientOverrides) -> &mut Self;
}

impl SetAll for ClientConfig {
    fn set_all(&mut self, overrides: &ClientOverrides) -> &mut Self {
        for (k, v) in overrides {
            self.set(k, v);
        }
        self
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, message: Outgoing) -> Result<Delivered, BusError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (name, value) in &message.headers {
            headers = headers.insert(Header {
                key: name.as_ref(),
                value: Some(value.as_ref()),
            });
        }
        let record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(&message.payload)
            .headers(headers);
        // The queue timeout only covers a full local queue; delivery itself is bounded by
        // `message.timeout.ms`.
        match self
            .producer
            .send(record, Timeout::After(self.settings.message_timeout))
            .await
        {
            Ok(delivery) => {
                self.auth.clear();
                Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            // `size` over-counts what librdkafka counts: within our limit, the broker refused.
            Err((err, _))
                if err.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                let size = message.size();
                Err(BusError::TooLarge {
                    topic: message.topic.into_owned(),
                    size,
                    limit: (size > self.settings.message_max_bytes)
                        .then_some(self.settings.message_max_bytes),
                })
            }
            Err((err, _)) => Err(self.explain(BusError::Publish {
                topic: message.topic.into_owned(),
                message: err.to_string(),
            })),
        }
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let instance = self.instance_id(group);
        let subscription = group::subscribe(
            &self.settings,
            &self.client_id,
            &self.group_metrics,
            group,
            topics,
            instance,
        )?;
        Ok(Box::new(subscription))
    }

    async fn read_topic_from(
        &self,
        topic: &str,
        from: &EndOffsets,
    ) -> Result<Box<dyn TopicReader>, BusError> {
        let (settings, client_id, topic, from) = (
            self.settings.clone(),
            self.client_id.clone(),
            topic.to_owned(),
            from.clone(),
        );
        let reader =
            tokio::task::spawn_blocking(move || reader::open(&settings, &client_id, &topic, &from))
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))??;
        Ok(Box::new(reader))
    }

    async fn end_offsets(&self, topic: &str) -> Result<EndOffsets, BusError> {
        let marks = self.watermarks(topic).await?;
        Ok(marks.into_iter().map(|(p, (_, high))| (p, high)).collect())
    }

    async fn watermarks(&self, topic: &str) -> Result<Watermarks, BusError> {
        let (producer, topic) = (self.producer.clone(), topic.to_owned());
        let timeout = self.settings.request_timeout;
        tokio::task::spawn_blocking(move || offsets::watermarks(producer.client(), &topic, timeout))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?
    }

    async fn committed(&self, group: &str, topic: &str) -> Result<EndOffsets, BusError> {
        let readers = self.commit_readers.clone();
        let (settings, client_id) = (self.settings.clone(), self.client_id.clone());
        let (group, topic) = (group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            readers.committed(&settings, &client_id, &group, &topic)
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        self.create_topics(topics).await
    }

    async fn check(&self) -> Result<(), BusError> {
        let producer = self.producer.clone();
        let timeout = self.settings.request_timeout;
        let answered = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| BusError::Unavailable(e.to_string()))
        })
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?;
        match answered {
            Ok(()) => {
                self.auth.clear();
                Ok(())
            }
            Err(error) => Err(self.explain(error)),
        }
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.settings.message_max_bytes)
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        self.group_metrics.register(registry);
    }
}
