//! The remediator's Prometheus metrics.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use opsmesh_runtime::metrics::register;

#[derive(Clone)]
pub struct Metrics {
    /// Actions by kind and outcome (`executed`, `already_done`, `dry_run`, `proposed`,
    /// `failed`, `rolled_back`, `advised`, `escalated`).
    pub actions: IntCounterVec,
    /// Refusals by reason code.
    pub refusals: IntCounterVec,
    /// Time from the first health check to the verdict, by result.
    pub verification_seconds: HistogramVec,
    /// Incidents waiting for a human's decision.
    pub approvals_pending: IntGauge,
    /// Ledger records published, by state.
    pub records: IntCounterVec,
    /// Incidents escalated because they made no progress, by the state they were stuck in.
    pub stuck: IntCounterVec,
    /// Incidents in background work, by what they wait for (`check`, `slot`, `retry`).
    pub agenda: IntGaugeVec,
    /// Investigation updates and reports not taken up, by reason (`not_report`,
    /// `not_incident`, `already_taken_up`, …).
    pub investigations_ignored: IntCounterVec,
    /// Investigations' reports that took an escalated incident up, by outcome (`planned`,
    /// `refused`).
    pub investigations_taken_up: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            actions: register(
                registry,
                IntCounterVec::new(
                    Opts::new("remediator_actions_total", "Actions by kind and outcome"),
                    &["kind", "outcome"],
                )
                .expect("valid counter"),
            ),
            refusals: register(
                registry,
                IntCounterVec::new(
                    Opts::new("remediator_refusals_total", "Refused actions by reason"),
                    &["reason"],
                )
                .expect("valid counter"),
            ),
            verification_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "remediator_verification_seconds",
                        "Time from acting to the verification verdict",
                    )
                    .buckets(vec![
                        0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                    ]),
                    &["result"],
                )
                .expect("valid histogram"),
            ),
            approvals_pending: register(
                registry,
                IntGauge::new(
                    "remediator_approvals_pending",
                    "Incidents awaiting an approval",
                )
                .expect("valid gauge"),
            ),
            records: register(
                registry,
                IntCounterVec::new(
                    Opts::new("remediator_ledger_records_total", "Ledger records by state"),
                    &["state"],
                )
                .expect("valid counter"),
            ),
            stuck: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "remediator_stuck_escalations_total",
                        "Incidents escalated because they made no progress, by the state they were stuck in",
                    ),
                    &["state"],
                )
                .expect("valid counter"),
            ),
            agenda: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "remediator_incidents_waiting",
                        "Incidents in background work, by what they wait for (check, slot, retry)",
                    ),
                    &["waiting"],
                )
                .expect("valid gauge"),
            ),
            investigations_ignored: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "remediator_investigations_ignored_total",
                        "Investigation updates and reports not taken up, by reason",
                    ),
                    &["reason"],
                )
                .expect("valid counter"),
            ),
            investigations_taken_up: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "remediator_investigations_taken_up_total",
                        "Investigation reports that took an escalated incident up, by outcome",
                    ),
                    &["outcome"],
                )
                .expect("valid counter"),
            ),
        }
    }
}
