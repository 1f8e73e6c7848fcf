//! The virtual clock: simulated time starts at a base instant and moves only when advanced
//! (manual mode) or at a multiple of wall-clock speed (scaled mode, for `opsmesh sim`).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

#[derive(Debug)]
pub struct Clock {
    base: DateTime<Utc>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    offset: Duration,
    scaled: Option<(Instant, f64)>,
}

impl Clock {
    /// Time moves only through [`Clock::advance`].
    pub fn manual(base: DateTime<Utc>) -> Self {
        Self {
            base,
            state: Mutex::new(State {
                offset: Duration::ZERO,
                scaled: None,
            }),
        }
    }

    /// Time follows the wall clock times `speed` (and [`Clock::advance`] jumps ahead).
    pub fn scaled(base: DateTime<Utc>, speed: f64) -> Self {
        Self {
            base,
            state: Mutex::new(State {
                offset: Duration::ZERO,
                scaled: Some((Instant::now(), speed.max(0.0))),
            }),
        }
    }

    pub fn base(&self) -> DateTime<Utc> {
        self.base
    }

    /// Virtual time elapsed since the base instant.
    pub fn elapsed(&self) -> Duration {
        let state = self.state.lock().expect("clock lock");
        let running = state
            .scaled
            .map(|(started, speed)| started.elapsed().mul_f64(speed))
            .unwrap_or_default();
        state.offset + running
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.at(self.elapsed())
    }

    /// The instant `elapsed` after the base.
    pub fn at(&self, elapsed: Duration) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    pub fn advance(&self, by: Duration) {
        self.state.lock().expect("clock lock").offset += by;
    }

    /// Moves to `elapsed` if that is ahead of now (never backwards).
    pub fn advance_to(&self, elapsed: Duration) {
        let now = self.elapsed();
        if elapsed > now {
            self.advance(elapsed - now);
        }
    }
}

/// RFC 3339 with second precision, as the Kubernetes API writes timestamps.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
