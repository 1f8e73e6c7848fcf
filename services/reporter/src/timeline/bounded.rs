//! What keeps the read model's memory bounded: a map that forgets its oldest insertion beyond
//! a capacity, and the metrics every table reports (`reporter_timeline_entries{table}`,
//! `reporter_timeline_evictions_total{table}`).

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use opsmesh_runtime::metrics::register;

/// A map holding at most `capacity` entries: inserting beyond it forgets the entry inserted
/// (or replaced) longest ago.
pub(super) struct InsertionOrdered<K, V> {
    entries: HashMap<K, (u64, V)>,
    by_insertion: BTreeMap<u64, K>,
    next: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> InsertionOrdered<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_insertion: BTreeMap::new(),
            next: 0,
            capacity,
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, value)| value)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(_, value)| value)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts or replaces `key` (then the newest entry); returns how many entries were
    /// forgotten to stay within the capacity.
    pub fn insert(&mut self, key: K, value: V) -> usize {
        self.insert_forgetting(key, value).len()
    }

    /// As [`InsertionOrdered::insert`], returning the keys forgotten.
    pub fn insert_forgetting(&mut self, key: K, value: V) -> Vec<K> {
        let stamp = self.next;
        self.next += 1;
        if let Some((old, _)) = self.entries.insert(key.clone(), (stamp, value)) {
            self.by_insertion.remove(&old);
        }
        self.by_insertion.insert(stamp, key);
        let mut forgotten = Vec::new();
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.by_insertion.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            forgotten.push(oldest);
        }
        forgotten
    }
}

/// The read model's tables, as labelled in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Incidents,
    /// Alert id → the incident it joined (`max_alert_ids`).
    AlertOwners,
    Alerts,
    Diagnoses,
    Remediations,
    Approvals,
    /// Ids of messages dropped from an incident, remembered so that a redelivery of one
    /// changes nothing (`max_dropped_ids_per_incident`).
    DroppedIds,
    /// Investigations of incidents (`max_investigations_per_incident`).
    Investigations,
    /// Investigations of questions, without an incident (`max_questions`).
    Questions,
}

impl Table {
    const ALL: [Table; 9] = [
        Table::Incidents,
        Table::AlertOwners,
        Table::Alerts,
        Table::Diagnoses,
        Table::Remediations,
        Table::Approvals,
        Table::DroppedIds,
        Table::Investigations,
        Table::Questions,
    ];

    /// The tables each incident holds, in the order of [`PerIncident`].
    pub const PER_INCIDENT: [Table; 6] = [
        Table::Alerts,
        Table::Diagnoses,
        Table::Remediations,
        Table::Approvals,
        Table::DroppedIds,
        Table::Investigations,
    ];

    fn label(self) -> &'static str {
        match self {
            Table::Incidents => "incidents",
            Table::AlertOwners => "alert_owners",
            Table::Alerts => "alerts",
            Table::Diagnoses => "diagnoses",
            Table::Remediations => "remediations",
            Table::Approvals => "approvals",
            Table::DroppedIds => "dropped_ids",
            Table::Investigations => "investigations",
            Table::Questions => "questions",
        }
    }
}

/// One incident's entries per table of [`Table::PER_INCIDENT`].
pub(super) type PerIncident = [usize; 6];

/// Entries held (summed over incidents) and entries dropped to stay within a cap, per table.
pub(super) struct TimelineMetrics {
    entries: Vec<IntGauge>,
    evictions: Vec<IntCounter>,
}

impl TimelineMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let entries = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "reporter_timeline_entries",
                    "Entries held by the incident read model, per table (summed over incidents)",
                ),
                &["table"],
            )
            .expect("valid gauge"),
        );
        let evictions = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "reporter_timeline_evictions_total",
                    "Entries the incident read model dropped to stay within reporter.timeline's caps, per table",
                ),
                &["table"],
            )
            .expect("valid counter"),
        );
        Self {
            entries: Table::ALL
                .iter()
                .map(|t| entries.with_label_values(&[t.label()]))
                .collect(),
            evictions: Table::ALL
                .iter()
                .map(|t| evictions.with_label_values(&[t.label()]))
                .collect(),
        }
    }

    pub(super) fn evicted(&self, table: Table, count: usize) {
        self.evictions[table as usize].inc_by(count as u64);
    }

    pub(super) fn set(&self, table: Table, entries: usize) {
        self.entries[table as usize].set(entries as i64);
    }

    /// Moves the per-incident gauges by an incident's change from `before` to `after`.
    pub(super) fn resize(&self, before: PerIncident, after: PerIncident) {
        for (index, table) in Table::PER_INCIDENT.iter().enumerate() {
            self.entries[*table as usize].add(after[index] as i64 - before[index] as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_insertion_goes_first_and_a_replaced_key_counts_as_new() {
        let mut map = InsertionOrdered::new(2);
        assert_eq!(map.insert("a", 1), 0);
        assert_eq!(map.insert("b", 2), 0);
        assert_eq!(map.insert("a", 3), 0, "replacing does not grow the map");
        assert_eq!(map.insert("c", 4), 1);
        assert!(!map.contains(&"b"), "b was inserted longest ago");
        assert_eq!((map.get(&"a"), map.get(&"c")), (Some(&3), Some(&4)));
        assert_eq!(map.len(), 2);
    }
}
