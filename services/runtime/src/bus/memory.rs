//! In-process bus with Kafka's consumer-group semantics: keyed partitions, one owner per
//! partition within a group, committed offsets that survive a member leaving, rebalance on
//! join and leave.
//!
//! This module holds the settings, the shared state and the bus; a group member's
//! subscription and the topic reader each have a submodule.

mod reader;
mod subscription;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use prometheus::{
    IntCounterVec, IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use serde::Deserialize;
use tokio::sync::Notify;

use super::{
    Bus, BusError, Delivered, EndOffsets, Outgoing, Received, Subscription, TopicReader, Watermarks,
};
use crate::config::{ConfigError, Validate};

use reader::MemoryReader;
use subscription::MemorySubscription;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    pub partitions: usize,
    /// Oldest messages are dropped beyond this many per partition (Kafka's retention). The
    /// bus lives in memory, so this bounds its size; a consumer group that falls further
    /// behind skips the dropped messages, with a warning and `bus_unread_dropped_total`.
    pub retention_messages: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            partitions: 4,
            retention_messages: 10_000,
        }
    }
}

impl Validate for MemorySettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.partitions == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.partitions"),
                "must be at least 1",
            ));
        }
        if self.retention_messages == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.retention_messages"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

type PartitionId = (String, usize);

#[derive(Default)]
struct Partition {
    /// Offset of `records[0]`.
    base: i64,
    records: VecDeque<Outgoing>,
}

impl Partition {
    fn end(&self) -> i64 {
        self.base + self.records.len() as i64
    }
}

#[derive(Default)]
struct Group {
    /// Member id → subscribed topics, in join order.
    members: BTreeMap<u64, Vec<String>>,
    committed: HashMap<PartitionId, i64>,
    /// Partition → owning member, recomputed on every join and leave.
    owners: HashMap<PartitionId, u64>,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Partition>>,
    groups: HashMap<String, Group>,
    next_member: u64,
}

struct Shared {
    settings: MemorySettings,
    state: Mutex<State>,
    /// Woken on every append and rebalance.
    changed: Notify,
    /// Messages retention dropped before a group read them, by group and topic.
    unread_dropped: IntCounterVec,
    /// Uncommitted messages per owned partition, refreshed by [`LagCollector`] when scraped.
    lag: IntGaugeVec,
}

/// The in-memory bus. Cloning shares the same topics.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

impl MemoryBus {
    pub fn new(settings: &MemorySettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                settings: settings.clone(),
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                unread_dropped: IntCounterVec::new(
                    Opts::new(
                        "bus_unread_dropped_total",
                        "Messages the in-memory bus's retention dropped before a consumer group read them",
                    ),
                    &["group", "topic"],
                )
                .expect("valid counter"),
                lag: IntGaugeVec::new(
                    Opts::new(
                        "bus_consumer_lag",
                        "Messages of a partition a consumer group owns that it has not committed yet",
                    ),
                    &["group", "topic", "partition"],
                )
                .expect("valid gauge"),
            }),
        }
    }

    /// Every message currently retained on `topic`, in partition then offset order.
    pub fn snapshot(&self, topic: &str) -> Vec<Received> {
        let state = self.shared.lock();
        let Some(partitions) = state.topics.get(topic) else {
            return Vec::new();
        };
        partitions
            .iter()
            .enumerate()
            .flat_map(|(p, part)| {
                part.records
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| to_received(r, p, part.base + i as i64))
            })
            .collect()
    }
}

impl MemoryBus {
    /// Messages on the group's subscribed topics not yet committed by it.
    pub fn lag(&self, group: &str) -> i64 {
        let state = self.shared.lock();
        let Some(g) = state.groups.get(group) else {
            return 0;
        };
        g.owners
            .keys()
            .map(|id| {
                let end = state
                    .topics
                    .get(&id.0)
                    .and_then(|ps| ps.get(id.1))
                    .map_or(0, Partition::end);
                end - g.committed.get(id).copied().unwrap_or(0)
            })
            .sum()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn to_received(record: &Outgoing, partition: usize, offset: i64) -> Received {
    Received {
        topic: record.topic.to_string(),
        partition: partition as i32,
        offset,
        key: Some(record.key.clone().into_bytes()),
        payload: record.payload.clone(),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_vec()))
            .collect(),
    }
}

impl State {
    fn partitions_mut(&mut self, topic: &str, count: usize) -> &mut Vec<Partition> {
        self.topics
            .entry(topic.to_owned())
            .or_insert_with(|| (0..count).map(|_| Partition::default()).collect())
    }

    /// Range-assigns every partition of the group's topics over its members.
    fn rebalance(&mut self, group: &str, partition_count: usize) {
        let Some(g) = self.groups.get(group) else {
            return;
        };
        let members: Vec<(u64, Vec<String>)> =
            g.members.iter().map(|(id, t)| (*id, t.clone())).collect();
        let mut topics: Vec<String> = members.iter().flat_map(|(_, t)| t.clone()).collect();
        topics.sort();
        topics.dedup();
        let mut owners = HashMap::new();
        for topic in topics {
            let subscribers: Vec<u64> = members
                .iter()
                .filter(|(_, t)| t.contains(&topic))
                .map(|(id, _)| *id)
                .collect();
            for p in 0..partition_count {
                owners.insert((topic.clone(), p), subscribers[p % subscribers.len()]);
            }
        }
        if let Some(g) = self.groups.get_mut(group) {
            g.owners = owners;
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, message: Outgoing) -> Result<Delivered, BusError> {
        let partition_count = self.shared.settings.partitions;
        let mut hasher = DefaultHasher::new();
        message.key.hash(&mut hasher);
        let partition = (hasher.finish() % partition_count as u64) as usize;
        let delivered = {
            let mut state = self.shared.lock();
            let part = &mut state.partitions_mut(&message.topic, partition_count)[partition];
            part.records.push_back(message);
            if part.records.len() > self.shared.settings.retention_messages {
                part.records.pop_front();
                part.base += 1;
            }
            Delivered {
                partition: partition as i32,
                offset: part.end() - 1,
            }
        };
        self.shared.changed.notify_waiters();
        Ok(delivered)
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let member = {
            let mut state = self.shared.lock();
            state.next_member += 1;
            let member = state.next_member;
            state
                .groups
                .entry(group.to_owned())
                .or_default()
                .members
                .insert(member, topics.iter().map(|t| t.to_string()).collect());
            state.rebalance(group, self.shared.settings.partitions);
            member
        };
        self.shared.changed.notify_waiters();
        Ok(Box::new(MemorySubscription::new(
            self.shared.clone(),
            group,
            member,
        )))
    }

    async fn read_topic_from(
        &self,
        topic: &str,
        from: &EndOffsets,
    ) -> Result<Box<dyn TopicReader>, BusError> {
        let (positions, ends) = {
            let mut state = self.shared.lock();
            let partitions = state.partitions_mut(topic, self.shared.settings.partitions);
            (
                (0..)
                    .zip(partitions.iter())
                    .map(|(p, part)| {
                        from.get(&p)
                            .map_or(part.base, |at| (*at).clamp(part.base, part.end()))
                    })
                    .collect(),
                partitions.iter().map(Partition::end).collect(),
            )
        };
        Ok(Box::new(MemoryReader::new(
            self.shared.clone(),
            topic,
            positions,
            ends,
        )))
    }

    async fn end_offsets(&self, topic: &str) -> Result<EndOffsets, BusError> {
        let mut state = self.shared.lock();
        Ok(state
            .partitions_mut(topic, self.shared.settings.partitions)
            .iter()
            .enumerate()
            .map(|(p, part)| (p as i32, part.end()))
            .collect())
    }

    async fn watermarks(&self, topic: &str) -> Result<Watermarks, BusError> {
        let mut state = self.shared.lock();
        Ok(state
            .partitions_mut(topic, self.shared.settings.partitions)
            .iter()
            .enumerate()
            .map(|(p, part)| (p as i32, (part.base, part.end())))
            .collect())
    }

    async fn committed(&self, group: &str, topic: &str) -> Result<EndOffsets, BusError> {
        let state = self.shared.lock();
        Ok(state
            .groups
            .get(group)
            .into_iter()
            .flat_map(|g| &g.committed)
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), offset)| (*p as i32, *offset))
            .collect())
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        for topic in topics {
            state.partitions_mut(topic, self.shared.settings.partitions);
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        // Publishing is synchronous: nothing is ever queued.
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn register_metrics(&self, registry: &Registry) {
        crate::metrics::register(registry, self.shared.unread_dropped.clone());
        crate::metrics::register(
            registry,
            LagCollector {
                shared: self.shared.clone(),
            },
        );
    }
}

/// Exports `bus_consumer_lag`, computed from the groups' committed offsets when scraped.
#[derive(Clone)]
struct LagCollector {
    shared: Arc<Shared>,
}

impl Collector for LagCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.shared.lag.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let lag = &self.shared.lag;
        lag.reset();
        {
            let state = self.shared.lock();
            for (name, group) in &state.groups {
                for id in group.owners.keys() {
                    let end = state
                        .topics
                        .get(&id.0)
                        .and_then(|ps| ps.get(id.1))
                        .map_or(0, Partition::end);
                    let committed = group.committed.get(id).copied().unwrap_or(0);
                    lag.with_label_values(&[name.as_str(), id.0.as_str(), &id.1.to_string()])
                        .set(end - committed);
                }
            }
        }
        lag.collect()
    }
}
