//! Keyed async locks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// One async lock per key (an incident, a target), created on demand and dropped when nobody
/// holds or waits for it: work on one key is serialised, work on different keys is not.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        KeyedGuard {
            locks: self,
            key: key.to_owned(),
            guard: Some(guard),
        }
    }
}

pub struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it now: nobody waits, the entry can go.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_at_a_time_and_the_map_empties() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.lock("a").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("b")).await;
        assert!(other.is_ok(), "another incident is not blocked");
        drop(other);
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock("a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "the same incident waits");
        drop(first);
        waiter.await.unwrap();
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
