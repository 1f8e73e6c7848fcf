//! The same delivery twice within a window answers with the first alert ids and is published
//! once — also when the two copies arrive at the same moment.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics::TableMetrics;

/// What the first delivery was answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub alert_id: uuid::Uuid,
    pub incident_key: String,
}

/// `None` until the owner is done; then `Some(None)` if it failed (a waiting duplicate must
/// try itself) or `Some(Some(accepted))`.
type Outcome = Option<Option<Accepted>>;

enum Slot {
    /// Being published by its owner. The first concurrent duplicate opens the channel that
    /// it and later ones wait on (most deliveries have none, and need none).
    Pending(Option<watch::Sender<Outcome>>),
    Done(Accepted, Instant),
}

/// SHA-256 of what identifies one delivery (see `routes::delivery_key`).
pub type DeliveryKey = [u8; 32];

/// The envelope id of a delivery received at `received`: a UUIDv7 whose time is the start of
/// the `window`-long period it arrived in and whose other bits hash the key and that period.
/// The dedup table is per replica; this id is not: a retry that lands on another replica
/// carries the same id and consumers drop it as a redelivery. A repeat in a later period
/// (Alertmanager re-sending a still-firing alert) is a new alert, as on a single replica.
/// Only a retry straddling a period boundary (about retry delay / window of them) gets a
/// second id, and the diagnoser then counts it on the same incident.
pub fn alert_id(key: &DeliveryKey, received: DateTime<Utc>, window: Duration) -> Uuid {
    let width = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
    let period = received.timestamp_millis().div_euclid(width) * width;
    let digest = Sha256::new()
        .chain_update(b"opsmesh alert id\0")
        .chain_update(key)
        .chain_update(period.to_be_bytes())
        .finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(period).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[derive(Default)]
struct Table {
    /// Touched on every request and holding up to `capacity` entries: a fast seeded hasher
    /// rather than SipHash. Keys are digests of what authenticated senders sent.
    slots: HashMap<DeliveryKey, Slot, foldhash::fast::RandomState>,
    /// Completion order, for expiry.
    order: VecDeque<(Instant, DeliveryKey)>,
}

pub struct Deliveries {
    window: Duration,
    capacity: usize,
    table: Mutex<Table>,
    metrics: TableMetrics,
}

/// The caller's role for one delivery key.
pub enum Claim<'d> {
    /// This request publishes the delivery.
    Owner(Ownership<'d>),
    /// Already stored: answer as the first time.
    Duplicate(Accepted),
    /// Being published by a concurrent request: wait for its outcome.
    Wait(watch::Receiver<Outcome>),
}

/// The duty to publish one delivery and settle it. Dropped unsettled (the request was
/// cancelled: the sender hung up mid-publish), it gives the delivery up, so its waiters hear
/// it failed and a retry can own it; nothing is left behind in the table.
pub struct Ownership<'d> {
    deliveries: &'d Deliveries,
    key: DeliveryKey,
    settled: bool,
}

impl Ownership<'_> {
    /// Stores the outcome (`None`: not published) and tells the waiting duplicates.
    pub fn finish(mut self, outcome: Option<Accepted>) {
        self.settle(outcome);
    }

    fn settle(&mut self, outcome: Option<Accepted>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let mut guard = self.deliveries.lock();
        let Table { slots, order } = &mut *guard;
        let pending = match &outcome {
            Some(accepted) => {
                let now = Instant::now();
                order.push_back((now, self.key));
                slots.insert(self.key, Slot::Done(accepted.clone(), now))
            }
            None => slots.remove(&self.key),
        };
        self.deliveries.metrics.entries.set(slots.len() as i64);
        if let Some(Slot::Pending(Some(waiters))) = pending {
            let _ = waiters.send(Some(outcome));
        }
    }
}

impl Drop for Ownership<'_> {
    fn drop(&mut self) {
        self.settle(None);
    }
}

impl Deliveries {
    /// Remembers at most `capacity` stored deliveries (plus those being published); beyond
    /// it the oldest is forgotten before its window ends, counted in `metrics.evictions`.
    pub fn new(window: Duration, capacity: usize, metrics: TableMetrics) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn claim(&self, key: &DeliveryKey) -> Claim<'_> {
        let mut guard = self.lock();
        let Table { slots, order } = &mut *guard;
        let now = Instant::now();
        while let Some((at, old)) = order.front() {
            let expired = now.duration_since(*at) >= self.window;
            if !expired && order.len() < self.capacity {
                break;
            }
            if matches!(slots.get(old), Some(Slot::Done(_, done)) if done == at) {
                slots.remove(old);
                if !expired {
                    self.metrics.evictions.inc();
                }
            }
            order.pop_front();
        }
        match slots.get_mut(key) {
            Some(Slot::Done(accepted, at)) if now.duration_since(*at) < self.window => {
                return Claim::Duplicate(accepted.clone());
            }
            Some(Slot::Pending(waiters)) => {
                let waiters = waiters.get_or_insert_with(|| watch::channel(None).0);
                return Claim::Wait(waiters.subscribe());
            }
            _ => {}
        }
        slots.insert(*key, Slot::Pending(None));
        self.metrics.entries.set(slots.len() as i64);
        Claim::Owner(Ownership {
            deliveries: self,
            key: *key,
            settled: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: DeliveryKey = [7; 32];

    fn table() -> TableMetrics {
        crate::metrics::ReceiverMetrics::new(&prometheus::Registry::new()).table("deliveries")
    }

    #[test]
    fn a_full_table_forgets_its_oldest_delivery_and_counts_it() {
        let metrics = table();
        let deliveries = Deliveries::new(Duration::from_secs(60), 3, metrics.clone());
        for n in 0..10u8 {
            let Claim::Owner(owner) = deliveries.claim(&[n; 32]) else {
                panic!("{n} is new")
            };
            owner.finish(Some(accepted()));
        }
        assert_eq!(
            deliveries.lock().slots.len(),
            3,
            "the table stays at its capacity"
        );
        assert_eq!(metrics.entries.get(), 3);
        assert_eq!(metrics.evictions.get(), 7);
        assert!(
            matches!(deliveries.claim(&[9; 32]), Claim::Duplicate(_)),
            "the newest stays"
        );
        assert!(
            matches!(deliveries.claim(&[0; 32]), Claim::Owner(_)),
            "the oldest went"
        );
    }

    fn accepted() -> Accepted {
        Accepted {
            alert_id: Uuid::now_v7(),
            incident_key: "k".into(),
        }
    }

    #[test]
    fn alert_ids_are_v7_stable_within_a_period_and_distinct_per_key_and_period() {
        let window = Duration::from_secs(600);
        let start: DateTime<Utc> = "2026-11-20T02:00:00.250Z".parse().unwrap();
        let later = start + chrono::Duration::seconds(599);
        let id = alert_id(&KEY, start, window);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id, alert_id(&KEY, later, window), "same period, same id");
        assert_ne!(id, alert_id(&[8; 32], start, window), "another delivery");
        let next = alert_id(&KEY, later + chrono::Duration::seconds(1), window);
        assert_ne!(id, next, "a repeat in the next period is a new alert");
        assert_ne!(
            alert_id(&KEY, start, Duration::ZERO),
            id,
            "no window: per millisecond"
        );
    }

    #[test]
    fn a_stored_delivery_is_answered_from_memory_within_the_window() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10, table());
        let Claim::Owner(owner) = deliveries.claim(&KEY) else {
            panic!("first is owner")
        };
        let first = accepted();
        owner.finish(Some(first.clone()));
        match deliveries.claim(&KEY) {
            Claim::Duplicate(again) => assert_eq!(again, first),
            _ => panic!("second is a duplicate"),
        }
    }

    #[test]
    fn a_failed_delivery_is_forgotten() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10, table());
        let Claim::Owner(owner) = deliveries.claim(&KEY) else {
            panic!()
        };
        owner.finish(None);
        assert!(matches!(deliveries.claim(&KEY), Claim::Owner(_)));
    }

    #[tokio::test]
    async fn an_owner_that_was_cancelled_is_taken_over() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10, table());
        let Claim::Owner(owner) = deliveries.claim(&KEY) else {
            panic!()
        };
        let Claim::Wait(mut waiter) = deliveries.claim(&KEY) else {
            panic!("second waits")
        };
        drop(owner);
        let outcome = waiter.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(outcome, Some(None), "a waiter learns the owner gave up");
        assert_eq!(deliveries.lock().slots.len(), 0, "nothing is left behind");
        let Claim::Owner(owner) = deliveries.claim(&KEY) else {
            panic!("a retry owns the delivery")
        };
        let first = accepted();
        owner.finish(Some(first.clone()));
        assert!(matches!(deliveries.claim(&KEY), Claim::Duplicate(again) if again == first));
    }

    #[test]
    fn outside_the_window_it_is_new_again() {
        let deliveries = Deliveries::new(Duration::from_millis(1), 10, table());
        let Claim::Owner(owner) = deliveries.claim(&KEY) else {
            panic!()
        };
        owner.finish(Some(accepted()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(deliveries.claim(&KEY), Claim::Owner(_)));
    }

    #[tokio::test]
    async fn a_concurrent_duplicate_waits_for_the_owner() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10, table());
        let Claim::Owner(owner) = deliveries.claim(&KEY) else {
            panic!()
        };
        let Claim::Wait(mut waiter) = deliveries.claim(&KEY) else {
            panic!("second waits")
        };
        let first = accepted();
        owner.finish(Some(first.clone()));
        let outcome = waiter.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(outcome, Some(Some(first)));
    }
}
