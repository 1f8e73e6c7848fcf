//! A member of a consumer group on the in-memory bus: delivery round-robin over the
//! partitions it owns, offsets committed as they are stored, retention losses warned about.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{PartitionId, Shared, State, to_received};
use crate::bus::{BusError, Received, Subscription};

pub(super) struct MemorySubscription {
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

impl MemorySubscription {
    pub(super) fn new(shared: Arc<Shared>, group: &str, member: u64) -> Self {
        Self {
            shared,
            group: group.to_owned(),
            member,
            positions: HashMap::new(),
            cursor: 0,
            losses: LossWarnings::default(),
            paused: false,
        }
    }

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

/// Retention losses of one member, warned about at most once per interval: a group that stays
/// behind skips again on nearly every read, and would flood the log.
#[derive(Default)]
pub(super) struct LossWarnings {
    last: Option<Instant>,
    unwarned: i64,
}

impl LossWarnings {
    pub(super) const INTERVAL: Duration = Duration::from_secs(10);

    /// Adds `lost` messages; returns how many to warn about now, when a warning is due.
    pub(super) fn record(&mut self, lost: i64, now: Instant) -> Option<i64> {
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
