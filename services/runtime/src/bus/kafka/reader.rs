//! [`TopicReader`] on Kafka: every partition assigned by hand from its beginning or a given
//! offset (no group membership, no commits), the end offsets taken before the first fetch.

use async_trait::async_trait;
use rdkafka::{
    ClientContext, Message, Offset, TopicPartitionList,
    consumer::{Consumer, ConsumerContext, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::Headers,
};

use super::{
    super::{BusError, EndOffsets, ReadEvent, Received, TopicReader},
    KafkaSettings, base_config,
    offsets::watermarks,
};

/// The reader's client context: a partition's end is how the reader knows it caught up, not
/// an error — librdkafka also reports it through the error callback, which would log it as one.
pub(super) struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, %reason, "librdkafka error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// Opens a reader of `topic`, each partition in `from` at its offset there, the others at their
/// beginning (blocking: metadata and watermark requests).
pub(super) fn open(
    settings: &KafkaSettings,
    client_id: &str,
    topic: &str,
    from: &EndOffsets,
) -> Result<KafkaReader, BusError> {
    let mut config = base_config(settings, client_id)?;
    config
        // librdkafka's assign needs a group id, but with partitions assigned by hand and
        // nothing committed the reader never joins the group: nothing is left on the broker.
        .set("group.id", format!("{client_id}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Reaching a partition's end is what tells the reader it caught up, even where the
        // log ends in offsets that are not records.
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set(
            "fetch.wait.max.ms",
            settings.fetch_wait_max.as_millis().to_string(),
        );
    for (key, value) in &settings.client {
        config.set(key, value);
    }
    let consumer: StreamConsumer<ReaderContext> = config
        .create_with_context(ReaderContext)
        .map_err(|e| BusError::Client(e.to_string()))?;
    // Taken before the first fetch: every partition end the reader meets is at least this.
    let marks = watermarks(consumer.client(), topic, settings.request_timeout)?;
    // Below the low watermark nothing is left to read (retention, compaction); past the high
    // one the broker would answer out of range and `auto.offset.reset` restart at the beginning.
    let starts: EndOffsets = marks
        .iter()
        .map(|(p, (low, high))| (*p, from.get(p).map_or(*low, |at| (*at).clamp(*low, *high))))
        .collect();
    let mut assignment = TopicPartitionList::new();
    for (partition, start) in &starts {
        assignment
            .add_partition_offset(topic, *partition, Offset::Offset(*start))
            .map_err(|e| BusError::Consume(e.to_string()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| BusError::Consume(e.to_string()))?;
    Ok(KafkaReader {
        consumer,
        positions: starts,
        snapshot: Some(marks.iter().map(|(p, (_, high))| (*p, *high)).collect()),
    })
}

pub(super) struct KafkaReader {
    consumer: StreamConsumer<ReaderContext>,
    positions: EndOffsets,
    /// End offsets at open, until `CaughtUp` was returned.
    snapshot: Option<EndOffsets>,
}

#[async_trait]
impl TopicReader for KafkaReader {
    async fn next(&mut self) -> Result<ReadEvent, BusError> {
        loop {
            if let Some(ends) = &self.snapshot
                && ends.iter().all(|(p, end)| self.positions[p] >= *end)
            {
                self.snapshot = None;
                return Ok(ReadEvent::CaughtUp);
            }
            match self.consumer.recv().await {
                Ok(message) => {
                    let at = self.positions.entry(message.partition()).or_default();
                    *at = (*at).max(message.offset() + 1);
                    return Ok(ReadEvent::Record(received(&message)));
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    if let Some(end) = self.snapshot.as_ref().and_then(|s| s.get(&partition)) {
                        let at = self.positions.entry(partition).or_default();
                        *at = (*at).max(*end);
                    }
                }
                Err(err) => return Err(BusError::Consume(err.to_string())),
            }
        }
    }

    fn positions(&self) -> EndOffsets {
        self.positions.clone()
    }
}

/// A fetched Kafka message, detached from the client (group consumers use it too).
pub(in crate::bus) fn received(message: &impl Message) -> Received {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Received {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
    }
}
