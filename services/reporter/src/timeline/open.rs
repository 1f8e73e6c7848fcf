//! The open incidents, for the metrics: how many are in each non-terminal state and how long
//! the oldest has been open. Computed from the read model at each scrape, because an age set
//! when the model changes would stand still while a stuck incident gets older.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use chrono::Utc;
use prometheus::{
    Gauge, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use strum::VariantArray;

use opsmesh_proto::IncidentState;

use super::{incident::Incident, store::Inner, view::NOT_YET_REMEDIATED};

/// `reporter_open_incidents{state}` and `reporter_oldest_open_incident_age_seconds`.
#[derive(Clone)]
pub(super) struct OpenIncidents {
    inner: Arc<RwLock<Inner>>,
    /// Never collected: they describe what [`Collector::collect`] builds afresh each time.
    by_state: IntGaugeVec,
    oldest: Gauge,
}

impl OpenIncidents {
    pub(super) fn new(inner: Arc<RwLock<Inner>>) -> Self {
        Self {
            inner,
            by_state: by_state(),
            oldest: oldest(),
        }
    }
}

fn by_state() -> IntGaugeVec {
    IntGaugeVec::new(
        Opts::new(
            "reporter_open_incidents",
            "Incidents in the timeline whose latest state is not terminal, by state (received \
             and diagnosed: no remediation record yet)",
        ),
        &["state"],
    )
    .expect("valid gauge")
}

fn oldest() -> Gauge {
    Gauge::new(
        "reporter_oldest_open_incident_age_seconds",
        "Time since the oldest open incident was opened (0 when none is open)",
    )
    .expect("valid gauge")
}

/// Every state an open incident can be in, so each has a series (0 when empty).
fn open_states() -> impl Iterator<Item = &'static str> {
    NOT_YET_REMEDIATED.into_iter().chain(
        IncidentState::VARIANTS
            .iter()
            .filter(|state| !state.is_terminal())
            .map(|state| <&'static str>::from(*state)),
    )
}

impl Collector for OpenIncidents {
    fn desc(&self) -> Vec<&Desc> {
        self.by_state
            .desc()
            .into_iter()
            .chain(self.oldest.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut counts: BTreeMap<String, i64> = open_states().map(|s| (s.to_owned(), 0)).collect();
        let now = Utc::now();
        let mut oldest_age = 0.0_f64;
        {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            for incident in inner.incidents.values().filter(|i| i.is_open()) {
                *counts.entry(incident.status()).or_default() += 1;
                if let Some(opened) = incident.opened_at() {
                    let age = (now - opened).num_milliseconds().max(0) as f64 / 1000.0;
                    oldest_age = oldest_age.max(age);
                }
            }
        }
        let by_state = by_state();
        for (state, count) in &counts {
            by_state.with_label_values(&[state.as_str()]).set(*count);
        }
        let oldest = oldest();
        oldest.set(oldest_age);
        by_state
            .collect()
            .into_iter()
            .chain(oldest.collect())
            .collect()
    }
}

impl Incident {
    /// No remediation record yet, or the latest one is not terminal.
    pub(super) fn is_open(&self) -> bool {
        self.remediations
            .last()
            .is_none_or(|record| !record.payload.state.is_terminal())
    }
}
