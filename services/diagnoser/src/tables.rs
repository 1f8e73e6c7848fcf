//! The diagnoser's tables keyed by what alerts and telemetry say (fingerprints, resources):
//! their metrics, and the least-recently-updated map the telemetry store is built from. Each
//! table has an explicit capacity (`diagnoser.max_incidents`, `diagnoser.telemetry_max_resources`)
//! so a sender inventing keys cannot grow the diagnoser's memory without bound.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
    hash::Hash,
};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use opsmesh_runtime::metrics::{counter_vec, register};

/// The metrics every table reports, labelled by table.
#[derive(Clone)]
pub struct DiagnoserMetrics {
    entries: IntGaugeVec,
    evictions: IntCounterVec,
    refused: IntCounterVec,
}

/// One table's size, the entries it dropped to stay within its capacity, and the entries it
/// refused because nothing in it could be dropped.
#[derive(Clone)]
pub struct TableMetrics {
    pub entries: IntGauge,
    pub evictions: IntCounter,
    pub refused: IntCounter,
}

impl DiagnoserMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| counter_vec(registry, name, help, &["table"]);
        Self {
            entries: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "diagnoser_table_entries",
                        "Entries in a table keyed by alert or telemetry content",
                    ),
                    &["table"],
                )
                .expect("valid gauge"),
            ),
            evictions: counter(
                "diagnoser_table_evictions_total",
                "Entries dropped to keep a table within its capacity (diagnoser.max_incidents, \
                 diagnoser.telemetry_max_resources)",
            ),
            refused: counter(
                "diagnoser_table_refused_total",
                "New entries refused because the table was full of entries that may not be \
                 dropped (open incidents); the alert went to the dead-letter topic",
            ),
        }
    }

    /// The metrics of table `name` (`incidents`, `telemetry`).
    pub fn table(&self, name: &str) -> TableMetrics {
        TableMetrics {
            entries: self.entries.with_label_values(&[name]),
            evictions: self.evictions.with_label_values(&[name]),
            refused: self.refused.with_label_values(&[name]),
        }
    }
}

/// A map that remembers when each key was last updated, so the least recently updated entry
/// can be found and dropped. The update stamps come from the caller, so several maps sharing
/// one counter can be compared (the telemetry store keeps one per record kind).
pub struct Lru<K, V> {
    entries: HashMap<K, (u64, V)>,
    by_update: BTreeMap<u64, K>,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            by_update: BTreeMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Default> Lru<K, V> {
    /// The value under `key` (created empty if absent), marked updated at `stamp`, which
    /// must be larger than every stamp given before.
    pub fn update(&mut self, key: K, stamp: u64) -> &mut V {
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert((stamp, V::default()));
        self.by_update.remove(&entry.0);
        entry.0 = stamp;
        self.by_update.insert(stamp, key);
        &mut entry.1
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (_, v))| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The stamp of the least recently updated entry.
    pub fn oldest(&self) -> Option<u64> {
        self.by_update.keys().next().copied()
    }

    /// Drops the least recently updated entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (_, key) = self.by_update.pop_first()?;
        let (_, value) = self.entries.remove(&key)?;
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_updated_entry_goes_first() {
        let mut lru: Lru<&str, Vec<u32>> = Lru::default();
        lru.update("a", 1).push(1);
        lru.update("b", 2).push(2);
        lru.update("a", 3).push(3);
        assert_eq!(lru.oldest(), Some(2));
        assert_eq!(lru.pop_oldest(), Some(("b", vec![2])));
        assert_eq!(lru.pop_oldest(), Some(("a", vec![1, 3])));
        assert_eq!(lru.pop_oldest(), None);
        assert_eq!(lru.len(), 0);
    }
}
