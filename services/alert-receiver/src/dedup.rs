//! The same delivery twice within a window answers with the first alert ids and is published
//! once — also when the two copies arrive at the same moment.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// What the first delivery was answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub alert_id: uuid::Uuid,
    pub incident_key: String,
}

enum Slot {
    /// Being published; duplicates wait for the outcome (`None` until known, then `Some`:
    /// `Some(None)` means it failed and the duplicate must try itself).
    Pending(watch::Receiver<Option<Option<Accepted>>>),
    Done(Accepted, Instant),
}

/// SHA-256 of what identifies one delivery (see `routes::delivery_key`).
pub type DeliveryKey = [u8; 32];

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
}

/// The caller's role for one delivery key.
pub enum Claim {
    /// First of its kind: publish, then call [`Deliveries::finish`].
    Owner(watch::Sender<Option<Option<Accepted>>>),
    /// Seen before and stored: answer with these ids.
    Duplicate(Accepted),
    /// Another request is publishing the same delivery: await its outcome.
    Wait(watch::Receiver<Option<Option<Accepted>>>),
}

impl Deliveries {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    pub fn claim(&self, key: &DeliveryKey) -> Claim {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Table { slots, order } = &mut *guard;
        let now = Instant::now();
        while let Some((at, old)) = order.front() {
            if now.duration_since(*at) < self.window && order.len() < self.capacity {
                break;
            }
            if matches!(slots.get(old), Some(Slot::Done(_, done)) if done == at) {
                slots.remove(old);
            }
            order.pop_front();
        }
        match slots.get(key) {
            Some(Slot::Done(accepted, at)) if now.duration_since(*at) < self.window => {
                return Claim::Duplicate(accepted.clone());
            }
            // An owner whose request was cancelled (the sender hung up mid-publish) never
            // finishes: its slot is taken over, or the key would be refused until restart.
            Some(Slot::Pending(receiver)) if receiver.has_changed().is_ok() => {
                return Claim::Wait(receiver.clone());
            }
            _ => {}
        }
        let (sender, receiver) = watch::channel(None);
        slots.insert(*key, Slot::Pending(receiver));
        Claim::Owner(sender)
    }

    /// Records the owner's outcome and wakes waiting duplicates.
    pub fn finish(
        &self,
        key: &DeliveryKey,
        sender: watch::Sender<Option<Option<Accepted>>>,
        outcome: Option<Accepted>,
    ) {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Table { slots, order } = &mut *guard;
        match &outcome {
            Some(accepted) => {
                let now = Instant::now();
                slots.insert(*key, Slot::Done(accepted.clone(), now));
                order.push_back((now, *key));
            }
            None => {
                slots.remove(key);
            }
        }
        let _ = sender.send(Some(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: DeliveryKey = [7; 32];

    fn accepted() -> Accepted {
        Accepted {
            alert_id: uuid::Uuid::now_v7(),
            incident_key: "k".into(),
        }
    }

    #[test]
    fn a_stored_delivery_is_answered_from_memory_within_the_window() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10);
        let Claim::Owner(sender) = deliveries.claim(&KEY) else {
            panic!("first is owner")
        };
        let first = accepted();
        deliveries.finish(&KEY, sender, Some(first.clone()));
        match deliveries.claim(&KEY) {
            Claim::Duplicate(again) => assert_eq!(again, first),
            _ => panic!("second is a duplicate"),
        }
    }

    #[test]
    fn a_failed_delivery_is_forgotten() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10);
        let Claim::Owner(sender) = deliveries.claim(&KEY) else {
            panic!()
        };
        deliveries.finish(&KEY, sender, None);
        assert!(matches!(deliveries.claim(&KEY), Claim::Owner(_)));
    }

    #[tokio::test]
    async fn an_owner_that_was_cancelled_is_taken_over() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10);
        let Claim::Owner(sender) = deliveries.claim(&KEY) else {
            panic!()
        };
        let Claim::Wait(mut waiter) = deliveries.claim(&KEY) else {
            panic!("second waits")
        };
        drop(sender);
        assert!(
            waiter.wait_for(Option::is_some).await.is_err(),
            "a waiter learns the owner is gone"
        );
        let Claim::Owner(sender) = deliveries.claim(&KEY) else {
            panic!("a retry owns the delivery")
        };
        let first = accepted();
        deliveries.finish(&KEY, sender, Some(first.clone()));
        assert!(matches!(deliveries.claim(&KEY), Claim::Duplicate(again) if again == first));
    }

    #[test]
    fn outside_the_window_it_is_new_again() {
        let deliveries = Deliveries::new(Duration::from_millis(1), 10);
        let Claim::Owner(sender) = deliveries.claim(&KEY) else {
            panic!()
        };
        deliveries.finish(&KEY, sender, Some(accepted()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(deliveries.claim(&KEY), Claim::Owner(_)));
    }

    #[tokio::test]
    async fn a_concurrent_duplicate_waits_for_the_owner() {
        let deliveries = Deliveries::new(Duration::from_secs(60), 10);
        let Claim::Owner(sender) = deliveries.claim(&KEY) else {
            panic!()
        };
        let Claim::Wait(mut waiter) = deliveries.claim(&KEY) else {
            panic!("second waits")
        };
        let first = accepted();
        deliveries.finish(&KEY, sender, Some(first.clone()));
        let outcome = waiter.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(outcome, Some(Some(first)));
    }
}
