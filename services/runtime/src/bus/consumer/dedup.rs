//! Deduplication on the envelope id: the ids a consumer remembers, to drop redeliveries.

use std::collections::{HashSet, VecDeque};

use serde::Deserialize;
use uuid::Uuid;

/// Just enough of the envelope to deduplicate without knowing the payload type.
#[derive(Deserialize)]
pub(super) struct EnvelopeId {
    pub(super) id: Uuid,
}

/// Remembers the last `capacity` envelope ids, to drop redeliveries.
pub struct RecentIds {
    capacity: usize,
    pub(super) set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.set.contains(id)
    }

    pub fn insert(&mut self, id: Uuid) {
        if self.capacity == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }
}
