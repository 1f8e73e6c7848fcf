//! The workloads' usual sizes between reads of OpenCost's allocation history: a day of sets per
//! step is a heavy query for OpenCost and the collector, and the sizes move slowly, so the
//! history is read at most every `history_refresh` and the last successful read reused.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::{Gauge, IntCounter};

/// Usual replicas by namespace, then controller.
pub type Baselines = BTreeMap<String, BTreeMap<String, u32>>;

pub struct BaselineCache {
    refresh: Duration,
    max_age: Duration,
    /// Ages are measured from here until the first successful read.
    started: Instant,
    state: Mutex<State>,
    failures: IntCounter,
    age: Gauge,
}

#[derive(Default)]
struct State {
    last_read: Option<Instant>,
    /// When the last successful read started.
    last_success: Option<Instant>,
    /// What it found, until it is `max_age` old.
    baselines: Option<Baselines>,
}

impl BaselineCache {
    /// `failures` counts failed reads; `age` is set each pass to the seconds since the last
    /// successful read started (since the collector started, before the first).
    pub fn new(refresh: Duration, max_age: Duration, failures: IntCounter, age: Gauge) -> Self {
        Self {
            refresh,
            max_age,
            started: Instant::now(),
            state: Mutex::default(),
            failures,
            age,
        }
    }

    /// A claim to read the history in this pass: none read yet, or the last one is `refresh`
    /// old. A read claims the slot as it starts, failed or not, so a failing or slow history
    /// is asked at most every `refresh` too, rather than every interval.
    pub fn claim_read(&self) -> Option<ReadClaim<'_>> {
        let now = Instant::now();
        let mut state = self.lock();
        let due = state
            .last_read
            .is_none_or(|at| now.duration_since(at) >= self.refresh);
        if !due {
            return None;
        }
        state.last_read = Some(now);
        Some(ReadClaim {
            cache: self,
            finished: false,
        })
    }

    /// The baselines for this pass: the last successful read's while younger than
    /// `max_age`, else none. Past that bound a cost remediation would scale back to a size
    /// nobody has checked for a while; without baselines the diagnoser falls back to the
    /// smallest size its telemetry window saw.
    pub fn current(&self) -> Baselines {
        let mut state = self.lock();
        let age = state.last_success.unwrap_or(self.started).elapsed();
        self.age.set(age.as_secs_f64());
        if age >= self.max_age && state.baselines.take().is_some() {
            tracing::warn!(
                max_age = ?self.max_age,
                "the workloads' usual sizes are older than collector.opencost.history_max_age: \
                 costs are reported without them until a read of the history succeeds"
            );
        }
        state.baselines.clone().unwrap_or_default()
    }

    /// Keeps a successful read's baselines; counts a failed one.
    fn record(&self, read: Result<Baselines, String>) {
        let mut state = self.lock();
        match read {
            Ok(baselines) => {
                state.last_success = state.last_read;
                state.baselines = Some(baselines);
            }
            Err(error) => {
                self.failures.inc();
                tracing::warn!(
                    %error,
                    last_success_age = ?state.last_success.map(|at| at.elapsed()),
                    "OpenCost allocation history not read: the workloads' usual sizes from the \
                     last successful read stay in use until collector.opencost.history_max_age"
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A read of the history in progress. Dropped unfinished (the source's `source_timeout` ended
/// the costs read before the HTTP client's own bound, the same, ended this one), it counts as
/// a failed read; the next one waits for `refresh` all the same.
pub struct ReadClaim<'a> {
    cache: &'a BaselineCache,
    finished: bool,
}

impl ReadClaim<'_> {
    pub fn finish(mut self, read: Result<Baselines, String>) {
        self.finished = true;
        self.cache.record(read);
    }
}

impl Drop for ReadClaim<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.cache
                .record(Err("abandoned: the costs read timed out".into()));
        }
    }
}
