//! Reading a topic on the in-memory bus outside any group, from its oldest retained message or
//! given offsets (see [`TopicReader`]).

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;

use super::{Shared, to_received};
use crate::bus::{BusError, EndOffsets, ReadEvent, Received, TopicReader};

/// Reads every partition of a topic from where it was opened.
pub(super) struct MemoryReader {
    shared: Arc<Shared>,
    topic: String,
    /// Next offset to return, per partition.
    positions: Vec<i64>,
    /// End offsets at open, until `CaughtUp` was returned.
    snapshot: Option<Vec<i64>>,
    /// Round-robin start, as in a subscription.
    cursor: usize,
}

impl MemoryReader {
    /// A reader at `positions`, reporting `CaughtUp` once it reaches `ends`.
    pub(super) fn new(
        shared: Arc<Shared>,
        topic: &str,
        positions: Vec<i64>,
        ends: Vec<i64>,
    ) -> Self {
        Self {
            shared,
            topic: topic.to_owned(),
            positions,
            snapshot: Some(ends),
            cursor: 0,
        }
    }

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
