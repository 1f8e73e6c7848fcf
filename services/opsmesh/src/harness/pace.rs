//! Pacing the virtual clock. The mesh runs on the wall clock, the simulator on the virtual
//! one; if the clock moved on the wall clock regardless, a slower machine would let more
//! virtual time pass before the mesh reacts (an incident diagnosed minutes later, a fault
//! gone by the time anyone looked). So the clock waits for the mesh: before an alert until
//! the collector has read the cluster as it now is and the diagnoser has taken that in, and
//! after each step until every alert and diagnosis published so far was taken up. The
//! `speed` pause stays a minimum per step (scenarios about the wall clock rely on it), and
//! `mesh_wait` bounds every wait: the mesh may legitimately be waiting on the wall clock
//! itself (a retry backoff during an API outage), and then time has to move.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opsmesh_runtime::bus::MemoryBus;
use opsmesh_sim::Simulator;

use super::observe::Observed;

/// How often a wait looks at the mesh again.
const POLL: Duration = Duration::from_millis(5);

pub(super) struct Pacer {
    pub(super) sim: Simulator,
    pub(super) bus: MemoryBus,
    pub(super) seen: Arc<Mutex<Observed>>,
    /// Consumer groups that must have read everything: the diagnoser's (alerts and
    /// telemetry) and the harness's own (what it has not seen it cannot wait for).
    pub(super) groups: Vec<String>,
    /// Real time per step at the run's speed (a minimum).
    pub(super) pause: Duration,
    /// The longest one wait for the mesh lasts.
    pub(super) mesh_wait: Duration,
}

impl Pacer {
    /// Moves the clock `by` (one step), then waits the speed's pause and for the mesh to
    /// have taken up everything published so far.
    pub(super) async fn step(&self, by: Duration) {
        self.sim.advance(by);
        self.settle().await;
    }

    /// Waits the speed's pause, and for the mesh to have taken up everything published.
    pub(super) async fn settle(&self) {
        tokio::time::sleep(self.pause).await;
        self.wait_until(|| self.caught_up()).await;
    }

    /// Waits until a collector pass that began after now has been published and taken in
    /// by the diagnoser: an alert sent next is diagnosed against the cluster as it is at
    /// this virtual time.
    pub(super) async fn fresh_telemetry(&self) {
        let passes = self
            .seen
            .lock()
            .expect("observed lock")
            .telemetry_passes
            .len();
        // The next pass may have begun before now; the one after it began later.
        self.wait_until(|| {
            self.seen
                .lock()
                .expect("observed lock")
                .telemetry_passes
                .len()
                >= passes + 2
                && self.caught_up()
        })
        .await;
    }

    /// Every alert and telemetry record consumed by the diagnoser, every diagnosed incident
    /// taken up by the remediator.
    fn caught_up(&self) -> bool {
        self.groups.iter().all(|g| self.bus.lag(g) == 0)
            && self
                .seen
                .lock()
                .expect("observed lock")
                .diagnoses_taken_up()
    }

    async fn wait_until(&self, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + self.mesh_wait;
        while !done() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }
}
