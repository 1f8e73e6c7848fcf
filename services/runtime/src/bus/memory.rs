//! In-process bus with Kafka's consumer-group semantics: keyed partitions, one owner per
//! partition within a group, committed offsets that survive a member leaving, rebalance on
//! join and leave.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
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
    Bus, BusError, Delivered, EndOffsets, Outgoing, ReadEvent, Received, Subscription, TopicReader,
};
use crate::config::{ConfigError, Validate};

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
        Ok(Box::new(MemorySubscription {
            shared: self.shared.clone(),
            group: group.to_owned(),
            member,
            positions: HashMap::new(),
            cursor: 0,
            losses: LossWarnings::default(),
            paused: false,
        }))
    }

    async fn read_topic(&self, topic: &str) -> Result<Box<dyn TopicReader>, BusError> {
        let (positions, ends) = {
            let mut state = self.shared.lock();
            let partitions = state.partitions_mut(topic, self.shared.settings.partitions);
            (
                partitions.iter().map(|p| p.base).collect(),
                partitions.iter().map(Partition::end).collect(),
            )
        };
        Ok(Box::new(MemoryReader {
            shared: self.shared.clone(),
            topic: topic.to_owned(),
            positions,
            snapshot: Some(ends),
            cursor: 0,
        }))
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

struct MemorySubscription {
    shared: Arc<Shared>,
    group: String,
    member: u64,
    /// Next offset to deliver per owned partition; reset from the committed offset whenever
    /// ownership is (re)gained.
    positions: HashMap<PartitionId, i64>,
    /// Round-robin start among owned partitions, so one busy partition cannot starve others.
    cursor: usize,
    losses: LossWarnings,
    /// Delivers nothing while set (every partition it owns, now or later, is paused).
    paused: bool,
}

/// Retention losses of one member, warned about at most once per interval: a group that stays
/// behind skips again on nearly every read, and would flood the log.
#[derive(Default)]
struct LossWarnings {
    last: Option<Instant>,
    unwarned: i64,
}

impl LossWarnings {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// Adds `lost` messages; returns how many to warn about now, when a warning is due.
    fn record(&mut self, lost: i64, now: Instant) -> Option<i64> {
        self.unwarned += lost;
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < Self::INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unwarned))
    }
}

impl MemorySubscription {
    fn try_next(&mut self) -> Option<Received> {
        if self.paused {
            return None;
        }
        let mut state = self.shared.lock();
        let State { topics, groups, .. } = &mut *state;
        let group = groups.get(&self.group)?;
        let mut owned: Vec<&PartitionId> = group
            .owners
            .iter()
            .filter(|(_, m)| **m == self.member)
            .map(|(p, _)| p)
            .collect();
        owned.sort();
        self.positions.retain(|p, _| owned.contains(&p));
        let n = owned.len();
        for i in 0..n {
            let id = owned[(self.cursor + i) % n];
            let Some(part) = topics.get(&id.0).and_then(|ps| ps.get(id.1)) else {
                continue;
            };
            let position = self
                .positions
                .entry(id.clone())
                .or_insert_with(|| group.committed.get(id).copied().unwrap_or(0));
            // Retention may have dropped what we had not read yet: resume at the oldest.
            if *position < part.base {
                let lost = part.base - *position;
                if let Some(lost) = self.losses.record(lost, Instant::now()) {
                    tracing::warn!(
                        group = %self.group, topic = %id.0, partition = id.1, lost,
                        "the in-memory bus dropped messages this group had not read yet (count \
                         since the last such warning); raise bus.memory.retention_messages if it \
                         keeps falling behind"
                    );
                }
                self.shared
                    .unread_dropped
                    .with_label_values(&[self.group.as_str(), id.0.as_str()])
                    .inc_by(lost as u64);
                *position = part.base;
            }
            if *position < part.end() {
                let record = &part.records[(*position - part.base) as usize];
                let received = to_received(record, id.1, *position);
                *position += 1;
                self.cursor = (self.cursor + i + 1) % n;
                return Some(received);
            }
        }
        None
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn recv(&mut self) -> Result<Received, BusError> {
        let shared = self.shared.clone();
        loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            // Register interest before looking, so an append in between is not missed.
            changed.as_mut().enable();
            if let Some(message) = self.try_next() {
                return Ok(message);
            }
            changed.await;
        }
    }

    fn store(&mut self, message: &Received) -> Result<(), BusError> {
        // Stored offsets are committed at once: there is no broker round trip to batch.
        let mut state = self.shared.lock();
        let group = state
            .groups
            .get_mut(&self.group)
            .ok_or_else(|| BusError::Commit("group vanished".into()))?;
        let id = (message.topic.clone(), message.partition as usize);
        if group.owners.get(&id) != Some(&self.member) {
            // Like Kafka after a revoke: the new owner will redeliver it.
            return Err(BusError::Commit(format!(
                "partition {}/{} is no longer owned by this member",
                message.topic, message.partition
            )));
        }
        let next = message.offset + 1;
        let committed = group.committed.entry(id).or_insert(0);
        *committed = (*committed).max(next);
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        Ok(())
    }

    fn pause(&mut self) -> Result<(), BusError> {
        self.paused = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), BusError> {
        // The next `recv` looks again; nothing waits on this flag.
        self.paused = false;
        Ok(())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            if let Some(group) = state.groups.get_mut(&self.group) {
                group.members.remove(&self.member);
            }
            state.rebalance(&self.group, self.shared.settings.partitions);
        }
        self.shared.changed.notify_waiters();
    }
}

/// Reads every partition of a topic from its oldest retained message (see [`TopicReader`]).
struct MemoryReader {
    shared: Arc<Shared>,
    topic: String,
    /// Next offset to return, per partition.
    positions: Vec<i64>,
    /// End offsets at open, until `CaughtUp` was returned.
    snapshot: Option<Vec<i64>>,
    /// Round-robin start, as in [`MemorySubscription`].
    cursor: usize,
}

impl MemoryReader {
    fn try_next(&mut self) -> Option<Received> {
        let state = self.shared.lock();
        let partitions = state.topics.get(&self.topic)?;
        let n = self.positions.len();
        for i in 0..n {
            let p = (self.cursor + i) % n;
            let part = &partitions[p];
            let position = &mut self.positions[p];
            // Retention dropped what was not read yet: gone for every reader, like Kafka's.
            *position = (*position).max(part.base);
            if *position < part.end() {
                let record = &part.records[(*position - part.base) as usize];
                let received = to_received(record, p, *position);
                *position += 1;
                self.cursor = (p + 1) % n;
                return Some(received);
            }
        }
        None
    }
}

#[async_trait]
impl TopicReader for MemoryReader {
    async fn next(&mut self) -> Result<ReadEvent, BusError> {
        let shared = self.shared.clone();
        loop {
            if let Some(ends) = &self.snapshot
                && self.positions.iter().zip(ends).all(|(at, end)| at >= end)
            {
                self.snapshot = None;
                return Ok(ReadEvent::CaughtUp);
            }
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            // Register interest before looking, so an append in between is not missed.
            changed.as_mut().enable();
            if let Some(record) = self.try_next() {
                return Ok(ReadEvent::Record(record));
            }
            changed.await;
        }
    }

    fn positions(&self) -> EndOffsets {
        (0..)
            .zip(self.positions.iter().copied())
            .collect::<BTreeMap<i32, i64>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &'static str, key: &str, n: u32) -> Outgoing {
        Outgoing {
            topic: topic.into(),
            key: key.into(),
            payload: n.to_string().into_bytes(),
            headers: vec![],
        }
    }

    fn bus() -> MemoryBus {
        MemoryBus::new(&MemorySettings::default())
    }

    #[tokio::test]
    async fn a_key_stays_in_order_on_one_partition() {
        let bus = bus();
        for n in 0..20 {
            bus.publish(msg("t", "k", n)).await.unwrap();
        }
        let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
        for n in 0..20 {
            let m = sub.recv().await.unwrap();
            assert_eq!(m.payload, n.to_string().into_bytes());
            sub.store(&m).unwrap();
        }
    }

    #[tokio::test]
    async fn a_new_member_resumes_after_the_last_stored_offset() {
        let bus = bus();
        for n in 0..3 {
            bus.publish(msg("t", "k", n)).await.unwrap();
        }
        let mut first = bus.subscribe("g", &["t"]).await.unwrap();
        let m = first.recv().await.unwrap();
        first.store(&m).unwrap();
        let unstored = first.recv().await.unwrap();
        assert_eq!(unstored.payload, b"1");
        drop(first);
        let mut second = bus.subscribe("g", &["t"]).await.unwrap();
        let again = second.recv().await.unwrap();
        assert_eq!(again.payload, b"1", "unstored message is redelivered");
    }

    #[tokio::test]
    async fn members_of_one_group_share_partitions_and_groups_are_independent() {
        let bus = bus();
        let mut a = bus.subscribe("g", &["t"]).await.unwrap();
        let mut b = bus.subscribe("g", &["t"]).await.unwrap();
        let mut other = bus.subscribe("h", &["t"]).await.unwrap();
        for n in 0..40 {
            bus.publish(msg("t", &format!("key-{n}"), n)).await.unwrap();
        }
        let mut seen = Vec::new();
        for sub in [&mut a, &mut b] {
            while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(20), sub.recv()).await
            {
                seen.push(m.payload);
            }
        }
        assert_eq!(seen.len(), 40, "each message to exactly one member of g");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 40);
        let mut h = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), other.recv()).await {
            h += 1;
        }
        assert_eq!(h, 40, "group h reads everything on its own");
    }

    #[tokio::test]
    async fn recv_wakes_on_publish() {
        let bus = bus();
        let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
        let publisher = bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            publisher.publish(msg("t", "k", 7)).await.unwrap();
        });
        let m = tokio::time::timeout(Duration::from_secs(2), sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload, b"7");
    }

    #[tokio::test]
    async fn a_paused_member_receives_nothing_until_resumed() {
        let bus = bus();
        let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
        bus.publish(msg("t", "k", 1)).await.unwrap();
        sub.pause().unwrap();
        bus.publish(msg("t", "k", 2)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), sub.recv())
                .await
                .is_err(),
            "nothing delivered while paused"
        );
        sub.resume().unwrap();
        let first = sub.recv().await.unwrap();
        assert_eq!(first.payload, b"1", "resumes where it stood");
        assert_eq!(sub.recv().await.unwrap().payload, b"2");
    }

    #[tokio::test]
    async fn retention_drops_the_oldest_and_counts_what_a_group_never_read() {
        let bus = MemoryBus::new(&MemorySettings {
            partitions: 1,
            retention_messages: 2,
        });
        let registry = crate::metrics::new_registry();
        bus.register_metrics(&registry);
        for n in 0..5 {
            bus.publish(msg("t", "k", n)).await.unwrap();
        }
        let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
        let m = sub.recv().await.unwrap();
        assert_eq!((m.offset, m.payload.as_slice()), (3, b"3".as_slice()));
        sub.store(&m).unwrap();
        assert_eq!(
            sub.recv().await.unwrap().offset,
            4,
            "nothing more is skipped"
        );
        let dropped = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "opsmesh_bus_unread_dropped_total")
            .expect("counter exported");
        let counter = &dropped.get_metric()[0];
        assert_eq!(
            counter.get_counter().get_value(),
            3.0,
            "offsets 0, 1 and 2 were never read"
        );
    }

    #[tokio::test]
    async fn lag_is_what_each_owned_partition_has_not_committed() {
        let bus = MemoryBus::new(&MemorySettings {
            partitions: 1,
            retention_messages: 100,
        });
        let registry = crate::metrics::new_registry();
        bus.register_metrics(&registry);
        let mut sub = bus.subscribe("g", &["t"]).await.unwrap();
        for n in 0..3 {
            bus.publish(msg("t", "k", n)).await.unwrap();
        }
        let m = sub.recv().await.unwrap();
        sub.store(&m).unwrap();
        let lag = |registry: &Registry| {
            registry
                .gather()
                .into_iter()
                .find(|f| f.name() == "opsmesh_bus_consumer_lag")
                .map(|f| f.get_metric()[0].get_gauge().get_value())
        };
        assert_eq!(lag(&registry), Some(2.0), "two of three not committed");
        drop(sub);
        assert_eq!(lag(&registry), None, "no member, no partition owned");
    }

    #[test]
    fn retention_losses_are_warned_about_at_most_once_per_interval() {
        let mut losses = LossWarnings::default();
        let start = Instant::now();
        assert_eq!(
            losses.record(3, start),
            Some(3),
            "the first loss is warned about"
        );
        assert_eq!(losses.record(2, start + Duration::from_secs(1)), None);
        assert_eq!(losses.record(4, start + Duration::from_secs(9)), None);
        assert_eq!(
            losses.record(1, start + LossWarnings::INTERVAL),
            Some(7),
            "the next warning counts everything since the last"
        );
        assert_eq!(losses.record(1, start + Duration::from_secs(11)), None);
    }
}
