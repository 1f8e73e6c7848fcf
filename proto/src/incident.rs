//! `opsmesh.incidents.v1` (compacted, keyed by fingerprint): the diagnoser's incident state,
//! so any replica can rebuild it after a restart or a rebalance.
//!
//! # Lifecycle
//!
//! ```text
//!   alert (new fingerprint, or a closed one after the quiet period)
//!     │
//!     ▼
//!   open ──► diagnosed ──► (remediator acting: planned, awaiting_approval, executing,
//!     │        (diagnosis       verifying, rolled_back …)
//!     │         published)        │
//!     │                           │ terminal remediator state
//!     │ sender says it ended      ▼
//!     └──────────────────────► closed, with exactly one outcome:
//!        (Alertmanager           resolved | escalated | refused | advised | dry_run |
//!         status: resolved)      no_action  (the remediator's terminal state)
//!                                cleared    (the sender said the condition ended)
//!                                 │
//!                                 │ same fingerprint fires again
//!                                 ▼
//!               within the quiet period (`diagnoser.cooldown` after `closed_at`):
//!                   attached to the closed incident (alert_count grows, record republished)
//!               after it:
//!                   a new incident `<fingerprint>-<generation>`, `recurrence_of` = this one
//! ```
//!
//! "Open" covers both open and diagnosed: the record does not change when the diagnosis is
//! published, and the remediator's intermediate states live in its ledger, not here. The
//! first outcome closes the incident; a later one (a remediator outcome after the sender
//! cleared it) changes nothing. While an incident is open every alert of its fingerprint
//! attaches to it: a storm is one incident.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{IncidentState, Payload, topics, vocabulary::vocabulary};

vocabulary! {
    /// `open`, or the outcome that closed the incident. Records written before outcomes existed
    /// say `resolved` for every close; they read as closed with outcome `resolved`.
    pub enum IncidentStatus {
        Open,
        /// The remediation was verified healthy.
        Resolved,
        /// Humans were told; nothing safe to do automatically.
        Escalated,
        /// Policy said no.
        Refused,
        /// A fix was handed to a developer; nothing changed in the cluster.
        Advised,
        /// The planned action was validated with a dry run and not applied.
        DryRun,
        /// Nothing was wrong.
        NoAction,
        /// The sender said the condition ended (Alertmanager `status: resolved`).
        Cleared,
    }
}

impl IncidentStatus {
    pub fn is_open(self) -> bool {
        self == Self::Open
    }

    /// The outcome a terminal remediator state closes the incident with; `None` for states
    /// that do not end it (`rolled_back` is followed by `escalated`).
    pub fn closed_by(state: IncidentState) -> Option<Self> {
        Some(match state {
            IncidentState::Resolved => Self::Resolved,
            IncidentState::Escalated => Self::Escalated,
            IncidentState::Refused => Self::Refused,
            IncidentState::Advised => Self::Advised,
            IncidentState::DryRun => Self::DryRun,
            IncidentState::NoAction => Self::NoAction,
            IncidentState::Received
            | IncidentState::Planned
            | IncidentState::AwaitingApproval
            | IncidentState::Executing
            | IncidentState::Verifying
            | IncidentState::RolledBack => return None,
        })
    }

    /// Closed without the condition being fixed: humans were told, a developer was handed a
    /// fix, or policy refused. A recurrence of such an incident is escalated with its history
    /// instead of being acted on again as if it were new.
    pub fn left_unfixed(self) -> bool {
        matches!(self, Self::Escalated | Self::Advised | Self::Refused)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IncidentRecord {
    pub fingerprint: String,
    /// `<fingerprint>` for the first incident of a fingerprint, `<fingerprint>-<n>` for the
    /// n-th.
    pub incident_id: String,
    pub generation: u32,
    pub status: IncidentStatus,
    /// `inferenceservice/<ns>/<name>`-style target, for attaching related alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub last_alert_at: DateTime<Utc>,
    /// When the incident closed (set with every status but `open`). Records written before
    /// outcomes existed call it `resolved_at`.
    #[serde(
        default,
        alias = "resolved_at",
        skip_serializing_if = "Option::is_none"
    )]
    pub closed_at: Option<DateTime<Utc>>,
    /// Alerts coalesced into this incident (a storm counts every copy), including those that
    /// arrived in the quiet period after it closed.
    pub alert_count: u64,
    /// The alert whose diagnosis represents the incident.
    pub first_alert_id: Uuid,
    /// The previous incident of the same fingerprint, when this one is its recurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_of: Option<String>,
    /// How the incident in `recurrence_of` ended (kept here so a redelivered opening alert
    /// is diagnosed the same way after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_outcome: Option<IncidentStatus>,
}

impl Payload for IncidentRecord {
    const SCHEMA: &'static str = topics::INCIDENTS;
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    #[test]
    fn every_terminal_remediator_state_and_only_those_close_an_incident() {
        for &state in IncidentState::VARIANTS {
            let closed = IncidentStatus::closed_by(state);
            assert_eq!(closed.is_some(), state.is_terminal(), "{state}");
            if let Some(status) = closed {
                assert!(!status.is_open());
                // Same spelling on the wire as the remediator's state.
                assert_eq!(status.to_string(), state.to_string());
            }
        }
    }

    #[test]
    fn a_record_from_before_outcomes_reads_as_closed_resolved() {
        let old = r#"{"fingerprint":"fp","incident_id":"fp","generation":1,"status":"resolved",
            "opened_at":"2026-01-01T00:00:00Z","last_alert_at":"2026-01-01T00:05:00Z",
            "resolved_at":"2026-01-01T00:10:00Z","alert_count":3,
            "first_alert_id":"0193a6b2-7c1e-7a4e-9f00-1c2d3e4f5a6b"}"#;
        let record: IncidentRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.status, IncidentStatus::Resolved);
        assert_eq!(
            record.closed_at,
            Some("2026-01-01T00:10:00Z".parse().unwrap())
        );
        assert_eq!(record.recurrence_of, None);
        assert_eq!(record.previous_outcome, None);
    }

    #[test]
    fn an_open_first_incident_is_written_as_before() {
        // Nothing new on the wire unless used: a release that predates outcomes still reads
        // the most common record.
        let record = IncidentRecord {
            fingerprint: "fp".into(),
            incident_id: "fp".into(),
            generation: 1,
            status: IncidentStatus::Open,
            target: None,
            opened_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            last_alert_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            closed_at: None,
            alert_count: 1,
            first_alert_id: Uuid::nil(),
            recurrence_of: None,
            previous_outcome: None,
        };
        let value = serde_json::to_value(&record).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "alert_count",
                "fingerprint",
                "first_alert_id",
                "generation",
                "incident_id",
                "last_alert_at",
                "opened_at",
                "status"
            ]
        );
    }

    #[test]
    fn only_escalated_advised_and_refused_are_left_unfixed() {
        use IncidentStatus::*;
        for &status in IncidentStatus::VARIANTS {
            assert_eq!(
                status.left_unfixed(),
                matches!(status, Escalated | Advised | Refused),
                "{status}"
            );
            // Display is the wire spelling (explanations quote it).
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.to_string())
            );
        }
    }
}
