//! Offsets asked of the brokers: a topic's watermarks (what it holds) and what a consumer group
//! committed on it (how far it got), for the topic reader, `end_offsets` and the DLQ sizes.

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use rdkafka::{
    ClientContext, Offset, TopicPartitionList,
    client::Client,
    consumer::{BaseConsumer, Consumer},
};

use super::{KafkaSettings, SetAll, base_config};
use crate::bus::{BusError, EndOffsets, Watermarks};

/// The partitions of `topic` from the metadata. Blocking: call it off the async threads.
fn partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, BusError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| BusError::Unavailable(e.to_string()))?;
    let described = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| BusError::Unavailable(format!("{topic}: not in the metadata")))?;
    if let Some(error) = described.error() {
        return Err(BusError::Unavailable(format!("{topic}: {error:?}")));
    }
    if described.partitions().is_empty() {
        return Err(BusError::Unavailable(format!("{topic}: no partitions yet")));
    }
    Ok(described.partitions().iter().map(|p| p.id()).collect())
}

/// Each partition of `topic`, with its low and high watermark, asked of the broker now.
/// Blocking: call it off the async threads.
pub(super) fn watermarks<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Watermarks, BusError> {
    partitions(client, topic, timeout)?
        .into_iter()
        .map(|partition| {
            let marks = client
                .fetch_watermarks(topic, partition, timeout)
                .map_err(|e| BusError::Unavailable(format!("{topic}/{partition}: {e}")))?;
            Ok((partition, marks))
        })
        .collect()
}

/// One client per consumer group whose commits are asked for. Such a client never joins its
/// group (it neither subscribes nor assigns): it only fetches the group's committed offsets.
#[derive(Default)]
pub(super) struct CommitReaders {
    by_group: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl CommitReaders {
    /// The offsets `group` committed on `topic`'s partitions; those without a commit are left
    /// out. Blocking: call it off the async threads.
    pub(super) fn committed(
        &self,
        settings: &KafkaSettings,
        client_id: &str,
        group: &str,
        topic: &str,
    ) -> Result<EndOffsets, BusError> {
        let consumer = self.client(settings, client_id, group)?;
        let mut asked = TopicPartitionList::new();
        for partition in partitions(consumer.client(), topic, settings.request_timeout)? {
            asked.add_partition(topic, partition);
        }
        let committed = consumer
            .committed_offsets(asked, settings.request_timeout)
            .map_err(|e| BusError::Unavailable(format!("{group}'s offsets on {topic}: {e}")))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(at) => Some((e.partition(), at)),
                _ => None,
            })
            .collect())
    }

    fn client(
        &self,
        settings: &KafkaSettings,
        client_id: &str,
        group: &str,
    ) -> Result<Arc<BaseConsumer>, BusError> {
        let mut clients = self.by_group.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(group) {
            return Ok(client.clone());
        }
        let client: BaseConsumer = base_config(settings, client_id)?
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set_all(&settings.client)
            .create()
            .map_err(|e| BusError::Client(e.to_string()))?;
        let client = Arc::new(client);
        clients.insert(group.to_owned(), client.clone());
        Ok(client)
    }
}
