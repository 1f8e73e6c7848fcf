//! The remediator's background work: incidents that wait for something (their next health
//! check, a free action slot, a dependency to come back) outside the consumer's handlers.
//!
//! Each entry holds the [`Settle`]s of the messages whose work it continues: their offsets
//! are committed only once the incident comes to rest (terminal, or waiting for a human), so a
//! crash redelivers them to the partition's next owner, which resumes the incident from its
//! ledger.

use std::{collections::HashMap, sync::Mutex};

use tokio::{sync::Notify, time::Instant};

use opsmesh_proto::{Envelope, diagnosis::Diagnosis};
use opsmesh_runtime::bus::Settle;

/// Why an incident is on the agenda.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The next health check (or the next action of its plan) is due at `due`.
    Check,
    /// Every action slot (`policy.max_concurrent_actions`) is taken.
    Slot,
    /// The last step failed transiently; retried with backoff.
    Retry,
}

/// One incident's pending work.
#[derive(Debug)]
pub struct Task {
    pub due: Instant,
    pub waiting: Waiting,
    /// Needed until the incident is planned (its first records come from it).
    pub diagnosis: Option<Envelope<Diagnosis>>,
    /// Health checks done in this replica; `None` after a restart (estimated from the ledger).
    pub checks_done: Option<u32>,
    /// Consecutive transient failures, and since when.
    pub failures: u32,
    pub failing_since: Option<Instant>,
    pub last_error: Option<String>,
    pub settles: Vec<Settle>,
}

impl Task {
    pub fn new(diagnosis: Option<Envelope<Diagnosis>>) -> Self {
        Self {
            due: Instant::now(),
            waiting: Waiting::Check,
            diagnosis,
            checks_done: None,
            failures: 0,
            failing_since: None,
            last_error: None,
            settles: Vec::new(),
        }
    }

    /// The incident came to rest: every message it continued counts as done.
    pub fn settle(self) {
        for settle in self.settles {
            settle.settle();
        }
    }

    fn merge(&mut self, other: Task) {
        self.due = self.due.min(other.due);
        self.waiting = other.waiting;
        if self.diagnosis.is_none() {
            self.diagnosis = other.diagnosis;
        }
        self.checks_done = self.checks_done.max(other.checks_done);
        self.settles.extend(other.settles);
    }
}

#[derive(Default)]
pub struct Agenda {
    tasks: Mutex<HashMap<String, Task>>,
    changed: Notify,
}

impl Agenda {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or merges into) the incident's entry and wakes the runner.
    pub fn put(&self, incident: &str, task: Task) {
        {
            let mut tasks = self.tasks();
            match tasks.get_mut(incident) {
                Some(existing) => existing.merge(task),
                None => {
                    tasks.insert(incident.to_owned(), task);
                }
            }
        }
        self.changed.notify_one();
    }

    /// Removes and returns every entry due by `now`.
    pub fn take_due(&self, now: Instant) -> Vec<(String, Task)> {
        let mut tasks = self.tasks();
        let due: Vec<String> = tasks
            .iter()
            .filter(|(_, t)| t.due <= now)
            .map(|(id, _)| id.clone())
            .collect();
        due.into_iter()
            .filter_map(|id| tasks.remove_entry(&id))
            .collect()
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.tasks().values().map(|t| t.due).min()
    }

    /// A slot freed: every incident waiting for one tries again now.
    pub fn slot_freed(&self) {
        let now = Instant::now();
        let mut woke = false;
        for task in self.tasks().values_mut() {
            if task.waiting == Waiting::Slot {
                task.due = now;
                woke = true;
            }
        }
        if woke {
            self.changed.notify_one();
        }
    }

    pub fn holds(&self, incident: &str) -> bool {
        self.tasks().contains_key(incident)
    }

    /// Entries by what they wait for, for the metrics.
    pub fn counts(&self) -> [(Waiting, usize); 3] {
        let tasks = self.tasks();
        [Waiting::Check, Waiting::Slot, Waiting::Retry]
            .map(|w| (w, tasks.values().filter(|t| t.waiting == w).count()))
    }

    /// Resolves when an entry was added or woken.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn due_entries_are_taken_and_slot_waiters_woken() {
        let agenda = Agenda::default();
        let later = Instant::now() + Duration::from_secs(60);
        agenda.put(
            "checking",
            Task {
                due: later,
                ..Task::new(None)
            },
        );
        agenda.put(
            "queued",
            Task {
                due: later,
                waiting: Waiting::Slot,
                ..Task::new(None)
            },
        );
        assert!(agenda.take_due(Instant::now()).is_empty());
        agenda.slot_freed();
        let due = agenda.take_due(Instant::now());
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "queued");
        assert_eq!(agenda.next_due(), Some(later));
    }

    #[test]
    fn merging_keeps_the_earliest_due_and_every_settle() {
        let (a, _pa) = opsmesh_runtime::bus::defer();
        let (b, _pb) = opsmesh_runtime::bus::defer();
        let now = Instant::now();
        let mut first = Task {
            due: now + Duration::from_secs(5),
            checks_done: Some(2),
            settles: vec![a],
            ..Task::new(None)
        };
        first.merge(Task {
            due: now,
            settles: vec![b],
            ..Task::new(None)
        });
        assert_eq!(first.due, now);
        assert_eq!(first.checks_done, Some(2));
        assert_eq!(first.settles.len(), 2);
    }
}
