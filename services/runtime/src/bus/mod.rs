//! The bus: one trait, a Kafka implementation for deployment and an in-memory one for
//! `opsmesh up` / `opsmesh demo` and fast tests, with the same consumer-group semantics.

mod consumer;
mod dead_letter;
mod dlq_sizes;
mod kafka;
mod memory;
mod publisher;
mod reader;

use std::{borrow::Cow, collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;

pub use consumer::{
    ConsumerSettings, Handler, HandlerError, Pending, RecentIds, Settle, consume, defer,
};
pub use dead_letter::DeadLetters;
pub use dlq_sizes::{DlqSettings, DlqSizes};
pub use kafka::{
    KafkaBus, KafkaSecurity, KafkaSettings, SaslMechanism, SaslSettings, SecurityProtocol,
    TlsSettings, TopicDescription,
};
pub use memory::{MemoryBus, MemorySettings};
pub use publisher::Publisher;
pub use reader::{
    EndOffsets, PartitionBarrier, ReadEvent, ReaderSettings, StateTopic, TopicFollower,
    TopicReader, Watermarks,
};

use crate::config::{ConfigError, Validate};

/// Header naming why a message was dead-lettered.
pub const HEADER_DLQ_ERROR: &str = "opsmesh-dlq-error";
/// Header naming where a dead-lettered message came from: `topic/partition/offset`.
pub const HEADER_DLQ_ORIGIN: &str = "opsmesh-dlq-origin";
/// Header naming the consumer group that gave up on it.
pub const HEADER_DLQ_GROUP: &str = "opsmesh-dlq-group";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("publishing to {topic} failed: {message}")]
    Publish { topic: String, message: String },
    #[error("consuming failed: {0}")]
    Consume(String),
    #[error("committing offsets failed: {0}")]
    Commit(String),
    #[error("bus not reachable: {0}")]
    Unavailable(String),
    #[error("bus client could not be created: {0}")]
    Client(String),
    /// The brokers refused our credentials (SASL or TLS client certificate).
    #[error("the Kafka brokers refused opsmesh's credentials (check bus.kafka.security): {0}")]
    Authentication(String),
    /// Permanent: the same message can never be stored, so it must not be retried.
    #[error("a {size}-byte message to {topic} is too large: {}", too_large_reason(*.limit))]
    TooLarge {
        topic: String,
        size: usize,
        /// The producer's limit when it refused; `None` when the broker did.
        limit: Option<usize>,
    },
}

fn too_large_reason(limit: Option<usize>) -> String {
    match limit {
        Some(limit) => format!("the limit is {limit} bytes (bus.kafka.message_max_bytes)"),
        None => "the broker refused it (its message.max.bytes, or the topic's max.message.bytes)"
            .to_owned(),
    }
}

/// A message to publish. Topics, header names and most header values are constants, so they
/// are borrowed: the in-memory bus retains every message, and each allocation it holds is
/// freed (and later reused) long after, when it is no longer in any cache.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: Cow<'static, str>,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(Cow<'static, str>, Cow<'static, [u8]>)>,
}

impl Outgoing {
    /// Bytes this message counts against [`Bus::max_message_bytes`]: counted as librdkafka
    /// counts them (key, payload, headers and the record's varints), the varints at their
    /// largest, so a message within it is never refused by the producer for its size.
    pub fn size(&self) -> usize {
        // Length, attributes, timestamp and offset deltas, key and value lengths, header count.
        const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
        // Name and value length varints.
        const HEADER_OVERHEAD: usize = 5 + 5;
        RECORD_OVERHEAD
            + self.key.len()
            + self.payload.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| HEADER_OVERHEAD + name.len() + value.len())
                .sum::<usize>()
    }
}

/// Where a published message was stored once the bus acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A consumed message, detached from the client.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Received {
    /// This message for `<topic>.dlq`: the original key, bytes and headers, plus why
    /// (`opsmesh-dlq-error`), from where (`opsmesh-dlq-origin`) and which group gave up.
    pub fn dead_letter(&self, reason: &str, error: &str, group: &str) -> Outgoing {
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone().into(), value.clone().into()))
            .collect();
        headers.push((
            HEADER_DLQ_ERROR.into(),
            format!("{reason}: {error}").into_bytes().into(),
        ));
        headers.push((
            HEADER_DLQ_ORIGIN.into(),
            format!("{}/{}/{}", self.topic, self.partition, self.offset)
                .into_bytes()
                .into(),
        ));
        headers.push((HEADER_DLQ_GROUP.into(), group.as_bytes().to_vec().into()));
        Outgoing {
            topic: opsmesh_proto::topics::dlq(&self.topic).into(),
            key: self
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            payload: self.payload.clone(),
            headers,
        }
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes and returns only once the bus durably acknowledged the message.
    async fn publish(&self, message: Outgoing) -> Result<Delivered, BusError>;
    /// Joins `group` for `topics`; partitions are shared among the group's members.
    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError>;
    /// Opens `topic` for reading from its start, outside any consumer group (see
    /// [`TopicReader`]). Buses that cannot (test doubles) answer [`BusError::Client`].
    async fn read_topic(&self, topic: &str) -> Result<Box<dyn TopicReader>, BusError> {
        self.read_topic_from(topic, &EndOffsets::new()).await
    }
    /// Opens `topic` for reading like [`Bus::read_topic`], each partition in `from` at its
    /// offset there (clamped to what the partition holds), the others from their start: a
    /// reader that only wants what comes after a point does not fetch the topic's history.
    async fn read_topic_from(
        &self,
        topic: &str,
        _from: &EndOffsets,
    ) -> Result<Box<dyn TopicReader>, BusError> {
        Err(BusError::Client(format!(
            "the {} bus cannot read {topic} outside a consumer group",
            self.kind()
        )))
    }
    /// Each partition's end offset now (the offset its next record will get).
    async fn end_offsets(&self, topic: &str) -> Result<EndOffsets, BusError> {
        Err(BusError::Client(format!(
            "the {} bus cannot tell the end offsets of {topic}",
            self.kind()
        )))
    }
    /// Each partition's log start offset and end offset now (`(low, high)`): it holds
    /// `high - low` messages.
    async fn watermarks(&self, topic: &str) -> Result<Watermarks, BusError> {
        Err(BusError::Client(format!(
            "the {} bus cannot tell the watermarks of {topic}",
            self.kind()
        )))
    }
    /// The offsets `group` committed on the partitions of `topic` (those it committed on),
    /// whether or not the group has members now.
    async fn committed(&self, group: &str, topic: &str) -> Result<EndOffsets, BusError> {
        Err(BusError::Client(format!(
            "the {} bus cannot tell what {group} committed on {topic}",
            self.kind()
        )))
    }
    /// Creates missing topics (and their DLQs).
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError>;
    /// Readiness: the bus answers.
    async fn check(&self) -> Result<(), BusError>;
    /// Waits until every message handed to the producer was acknowledged.
    async fn flush(&self, timeout: Duration) -> Result<(), BusError>;
    /// `kafka` or `memory`, for logs.
    fn kind(&self) -> &'static str;
    /// Largest message `publish` can store (payload, key and headers), if the bus has a limit.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }
    /// Adds the bus's own metrics, if it has any, to a service's registry.
    fn register_metrics(&self, _registry: &prometheus::Registry) {}
}

/// One member of a consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// The next message of any partition this member owns.
    async fn recv(&mut self) -> Result<Received, BusError>;
    /// Marks `message` as done: its offset will be committed (at-least-once).
    fn store(&mut self, message: &Received) -> Result<(), BusError>;
    /// Commits every stored offset now (on shutdown).
    async fn commit(&mut self) -> Result<(), BusError>;
    /// Stops fetching from every partition this member holds, and from any it is assigned
    /// until [`Subscription::resume`]. Keep calling `recv` while paused: it keeps the member
    /// in its group (Kafka evicts a member that does not poll for `max.poll.interval`) and may
    /// still return a few messages fetched before the pause.
    fn pause(&mut self) -> Result<(), BusError>;
    /// Fetches again from every partition this member holds.
    fn resume(&mut self) -> Result<(), BusError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Kafka,
    Memory,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    pub kind: BusKind,
    pub kafka: KafkaSettings,
    pub memory: MemorySettings,
    pub consumer: ConsumerSettings,
    /// Reading state topics from their start (`bus.reader`).
    pub reader: ReaderSettings,
    /// The DLQ size gauges and the replayer's group (`bus.dlq`).
    pub dlq: DlqSettings,
    /// Create missing topics at start (the test broker does not auto-create).
    pub create_topics: bool,
    /// Consumer groups are named `<group_prefix><service>`, e.g. `opsmesh-diagnoser`.
    pub group_prefix: String,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            kind: BusKind::Kafka,
            kafka: KafkaSettings::default(),
            memory: MemorySettings::default(),
            consumer: ConsumerSettings::default(),
            reader: ReaderSettings::default(),
            dlq: DlqSettings::default(),
            create_topics: true,
            group_prefix: "opsmesh-".into(),
        }
    }
}

impl Validate for BusSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.kind == BusKind::Kafka {
            self.kafka.validate(&format!("{prefix}.kafka"))?;
        }
        self.memory.validate(&format!("{prefix}.memory"))?;
        self.consumer.validate(&format!("{prefix}.consumer"))?;
        self.reader.validate(&format!("{prefix}.reader"))?;
        self.dlq.validate(&format!("{prefix}.dlq"))
    }
}

/// Builds the configured bus.
pub fn connect(settings: &BusSettings, client_id: &str) -> Result<Arc<dyn Bus>, BusError> {
    Ok(match settings.kind {
        BusKind::Kafka => Arc::new(KafkaBus::new(&settings.kafka, client_id)?),
        BusKind::Memory => Arc::new(MemoryBus::new(&settings.memory)),
    })
}

/// Extra librdkafka properties, passed through unchanged (`bus.kafka.client`).
pub type ClientOverrides = BTreeMap<String, String>;
