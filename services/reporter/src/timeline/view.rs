//! The views computed from one incident (list row, detail page, pending approval, audit
//! chain).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState, RootCause, Severity,
    alert::Alert,
    approval::{Approval, ApprovalDecision},
    diagnosis::{Diagnosis, Evidence, LlmUsage, RunbookRef},
    investigation::InvestigationReport,
    remediation::{ActionRecord, Remediation, Verification},
};

use super::{
    chain::{AuditChain, ChainStatus, is_outcome},
    incident::Incident,
    investigation::{Investigation, InvestigationSummary},
};
use crate::runbooks::{self, SectionText};

/// A row of `GET /api/incidents`.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentSummary {
    pub id: String,
    pub cluster: String,
    /// `received` (alerts only), `diagnosed`, or the remediator's latest state
    /// (`awaiting_approval`, `resolved`, `escalated`, …).
    pub status: String,
    pub root_cause: Option<RootCause>,
    pub summary: Option<String>,
    pub target: Option<String>,
    /// The namespace of the alerted entity, else of the diagnosed target.
    pub namespace: Option<String>,
    pub severity: Option<Severity>,
    pub alert_names: Vec<String>,
    pub alert_count: u64,
    pub opened_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// When the first outcome (resolved, escalated, advised, refused, rolled back, dry run,
    /// no action) was recorded.
    pub outcome_at: Option<DateTime<Utc>>,
    pub time_to_outcome_seconds: Option<f64>,
    pub awaiting_approval: bool,
    pub audit_chain: ChainStatus,
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub topic: &'static str,
    pub envelope_id: Uuid,
    pub source: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub id: Uuid,
    pub name: String,
    pub severity: Severity,
    pub status: String,
    pub source: String,
    pub sid: Option<String>,
    pub results_link: Option<String>,
    pub entity: Option<String>,
    pub received_at: DateTime<Utc>,
    pub rows: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub seq: u64,
    pub state: IncidentState,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub action: Option<ActionRecord>,
    pub projected_effect: Option<String>,
    pub projected_saving_usd: Option<f64>,
    pub verification: Option<Verification>,
    /// The record's hash and the hash of the record before it (the chain's link).
    pub hash: String,
    pub prev_hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    pub id: Uuid,
    pub idempotency_key: String,
    pub decision: ApprovalDecision,
    pub approver: String,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

/// An action waiting for a human.
#[derive(Debug, Clone, Serialize)]
pub struct PendingApproval {
    pub incident_id: String,
    pub cluster: String,
    pub idempotency_key: String,
    pub kind: ActionKind,
    pub target: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub reason: String,
    pub projected_effect: Option<String>,
    pub root_cause: Option<RootCause>,
    pub summary: Option<String>,
    pub requested_at: DateTime<Utc>,
    /// The decision already submitted for this action, if any (the remediator has not moved
    /// on yet).
    pub decided: Option<ApprovalView>,
}

/// The investigator's latest report on an incident: findings citing tool results, proposals
/// (advice: they go through the remediator's plan and policy), steps, tokens and cost.
#[derive(Debug, Clone, Serialize)]
pub struct InvestigationView {
    pub investigation_id: String,
    pub question: String,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub report: InvestigationReport,
}

/// `GET /api/incidents/{id}`: the whole reasoning chain.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub summary: IncidentSummary,
    pub alerts: Vec<AlertView>,
    pub diagnosis_id: Option<Uuid>,
    pub confidence: Option<f64>,
    pub explanation: Option<String>,
    /// Every piece of evidence, with its SPL (or telemetry reference) and what came back.
    pub evidence: Vec<Evidence>,
    pub runbook: Option<RunbookRef>,
    /// The runbook section's text, from the runbooks built into this reporter.
    pub runbook_section: Option<SectionText>,
    pub recommended_actions: Vec<opsmesh_proto::diagnosis::ActionProposal>,
    pub developer_fix: Option<String>,
    /// The LLM's narrative for the on-call engineer, when the diagnosis has one.
    pub narrative: Option<String>,
    /// What the diagnosis spent on the LLM (tokens, cost, discarded output).
    pub llm: Option<LlmUsage>,
    /// The remediator's latest decision.
    pub decision: Option<DecisionView>,
    /// Every remediation record, in ledger order.
    pub actions: Vec<DecisionView>,
    /// The latest verification result.
    pub verification: Option<Verification>,
    pub pending_approval: Option<PendingApproval>,
    pub approvals: Vec<ApprovalView>,
    pub audit_chain: AuditChain,
    /// The investigator's latest report, when it investigated this incident.
    pub investigation: Option<InvestigationView>,
    /// Every investigation of this incident kept, newest first, in whatever state.
    pub investigations: Vec<InvestigationSummary>,
    pub timeline: Vec<TimelineEntry>,
}

/// The statuses of an incident the remediator has recorded nothing for yet: alerts only, and
/// diagnosed.
pub(crate) const NOT_YET_REMEDIATED: [&str; 2] = ["received", "diagnosed"];

impl Incident {
    fn latest_diagnosis(&self) -> Option<&Envelope<Diagnosis>> {
        self.diagnoses.last()
    }

    fn latest_record(&self) -> Option<&Envelope<Remediation>> {
        self.remediations.last()
    }

    pub fn status(&self) -> String {
        let [received, diagnosed] = NOT_YET_REMEDIATED;
        match (self.latest_record(), self.latest_diagnosis()) {
            (Some(record), _) => record.payload.state.to_string(),
            (None, Some(_)) => diagnosed.into(),
            (None, None) => received.into(),
        }
    }

    pub(super) fn opened_at(&self) -> Option<DateTime<Utc>> {
        let alerts = self.alerts.iter().map(|a| a.payload.received_at);
        alerts.min().or(self.first_occurred_at)
    }

    fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.alerts
            .iter()
            .map(|a| a.occurred_at)
            .chain(self.diagnoses.iter().map(|d| d.occurred_at))
            .chain(self.remediations.iter().map(|r| r.occurred_at))
            .chain(self.approvals.iter().map(|a| a.occurred_at))
            .max()
    }

    pub fn summary(&self) -> IncidentSummary {
        let diagnosis = self.latest_diagnosis();
        let opened_at = self.opened_at();
        let outcome_at = self.folded.first_outcome_at.or_else(|| {
            self.remediations
                .iter()
                .find(|r| is_outcome(r.payload.state))
                .map(|r| r.occurred_at)
        });
        let mut alert_names: Vec<String> =
            self.alerts.iter().map(|a| a.payload.name.clone()).collect();
        alert_names.dedup();
        let target = diagnosis
            .and_then(|d| d.payload.target.clone())
            .or_else(|| self.alerts.first().and_then(|a| a.payload.entity.target()));
        IncidentSummary {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            status: self.status(),
            root_cause: diagnosis.map(|d| d.payload.root_cause),
            summary: diagnosis.map(|d| d.payload.summary.clone()),
            namespace: self
                .alerts
                .iter()
                .find_map(|a| a.payload.entity.namespace.clone())
                .or_else(|| target_namespace(target.as_deref())),
            target,
            severity: self.alerts.iter().map(|a| a.payload.severity).max(),
            alert_names,
            alert_count: self.alert_count,
            opened_at,
            updated_at: self.updated_at(),
            outcome_at,
            time_to_outcome_seconds: match (opened_at, outcome_at) {
                (Some(open), Some(out)) => {
                    Some(((out - open).num_milliseconds().max(0) as f64) / 1000.0)
                }
                _ => None,
            },
            awaiting_approval: self.pending_approval().is_some_and(|p| p.decided.is_none()),
            audit_chain: self.folded.verify(&self.remediations).status,
        }
    }

    pub fn pending_approval(&self) -> Option<PendingApproval> {
        let record = self.latest_record()?;
        if record.payload.state != IncidentState::AwaitingApproval {
            return None;
        }
        let action = record.payload.action.as_ref()?;
        let diagnosis = self
            .diagnoses
            .iter()
            .find(|d| d.id == record.payload.diagnosis_id)
            .or_else(|| self.latest_diagnosis());
        Some(PendingApproval {
            incident_id: self.id.clone(),
            cluster: self.cluster.clone(),
            idempotency_key: action.idempotency_key.clone(),
            kind: action.kind,
            target: action.target.clone(),
            params: action.params.clone(),
            reason: record.payload.reason.clone(),
            projected_effect: record.payload.projected_effect.clone(),
            root_cause: diagnosis.map(|d| d.payload.root_cause),
            summary: diagnosis.map(|d| d.payload.summary.clone()),
            requested_at: record.occurred_at,
            decided: self
                .approvals
                .iter()
                .filter(|a| {
                    a.payload.idempotency_key == action.idempotency_key
                        && a.occurred_at >= record.occurred_at
                })
                .map(approval_view)
                .next(),
        })
    }

    pub fn detail(&self) -> IncidentDetail {
        let diagnosis = self.latest_diagnosis();
        let actions: Vec<DecisionView> = self.remediations.iter().map(decision_view).collect();
        let runbook = diagnosis.and_then(|d| d.payload.runbook.clone());
        IncidentDetail {
            summary: self.summary(),
            alerts: self.alerts.iter().map(alert_view).collect(),
            diagnosis_id: diagnosis.map(|d| d.id),
            confidence: diagnosis.map(|d| d.payload.confidence),
            explanation: diagnosis.map(|d| d.payload.explanation.clone()),
            evidence: diagnosis
                .map(|d| d.payload.evidence.clone())
                .unwrap_or_default(),
            runbook_section: runbook.as_ref().and_then(runbooks::section),
            runbook,
            recommended_actions: diagnosis
                .map(|d| d.payload.recommended_actions.clone())
                .unwrap_or_default(),
            developer_fix: diagnosis.and_then(|d| d.payload.developer_fix.clone()),
            narrative: diagnosis.and_then(|d| d.payload.narrative.clone()),
            llm: diagnosis.map(|d| d.payload.llm.clone()),
            decision: actions.last().cloned(),
            verification: self
                .remediations
                .iter()
                .rev()
                .find_map(|r| r.payload.verification.clone()),
            actions,
            pending_approval: self.pending_approval(),
            approvals: self.approvals.iter().map(approval_view).collect(),
            audit_chain: self.folded.verify(&self.remediations),
            investigation: self
                .investigations
                .iter()
                .filter_map(investigation_view)
                .max_by_key(|view| view.at),
            investigations: self
                .investigations
                .iter()
                .rev()
                .map(Investigation::summary)
                .collect(),
            timeline: self.timeline(),
        }
    }

    fn timeline(&self) -> Vec<TimelineEntry> {
        let mut entries = Vec::with_capacity(self.events());
        for a in &self.alerts {
            entries.push(TimelineEntry {
                at: a.payload.received_at,
                topic: opsmesh_proto::topics::ALERTS,
                envelope_id: a.id,
                source: a.source.clone(),
                text: format!(
                    "alert {:?} ({}, {}) from {}",
                    a.payload.name,
                    a.payload.severity,
                    match a.payload.status {
                        opsmesh_proto::alert::AlertStatus::Firing => "firing",
                        opsmesh_proto::alert::AlertStatus::Resolved => "resolved",
                    },
                    a.payload.source
                ),
            });
        }
        for d in &self.diagnoses {
            entries.push(TimelineEntry {
                at: d.occurred_at,
                topic: opsmesh_proto::topics::DIAGNOSES,
                envelope_id: d.id,
                source: d.source.clone(),
                text: format!(
                    "diagnosis: {} ({:.0}% confidence, {} evidence): {}",
                    d.payload.root_cause,
                    d.payload.confidence * 100.0,
                    d.payload.evidence.len(),
                    d.payload.summary
                ),
            });
        }
        for r in &self.remediations {
            let action = r
                .payload
                .action
                .as_ref()
                .map(|a| format!(" [{} {}]", a.kind, a.target))
                .unwrap_or_default();
            entries.push(TimelineEntry {
                at: r.occurred_at,
                topic: opsmesh_proto::topics::REMEDIATIONS,
                envelope_id: r.id,
                source: r.source.clone(),
                text: format!(
                    "#{} {}{action}: {}",
                    r.payload.ledger.seq, r.payload.state, r.payload.reason
                ),
            });
        }
        for a in &self.approvals {
            let decision = match a.payload.decision {
                ApprovalDecision::Approve => "approved",
                ApprovalDecision::Reject => "rejected",
            };
            entries.push(TimelineEntry {
                at: a.occurred_at,
                topic: opsmesh_proto::topics::APPROVALS,
                envelope_id: a.id,
                source: a.source.clone(),
                text: format!(
                    "{} {decision} {}{}",
                    a.payload.approver,
                    a.payload.idempotency_key,
                    a.payload
                        .comment
                        .as_ref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                ),
            });
        }
        for investigation in &self.investigations {
            let summary = investigation.summary();
            if let Some(request) = &investigation.request_envelope {
                entries.push(TimelineEntry {
                    at: request.at,
                    topic: opsmesh_proto::topics::INVESTIGATION_REQUESTS,
                    envelope_id: request.id,
                    source: request.source.clone(),
                    text: format!(
                        "investigation {} requested by {}",
                        summary.investigation_id,
                        summary.requested_by.as_deref().unwrap_or("?")
                    ),
                });
            }
            if let (Some(i), Some(report)) = (
                investigation_view(investigation),
                &investigation.report_envelope,
            ) {
                entries.push(TimelineEntry {
                    at: i.at,
                    topic: opsmesh_proto::topics::INVESTIGATIONS,
                    envelope_id: report.id,
                    source: report.source.clone(),
                    text: format!(
                        "investigation {}: {} ({}), {} findings, {} steps, ${:.4}",
                        i.investigation_id,
                        i.report.state,
                        i.report.stop_reason,
                        i.report.findings.len(),
                        i.report.steps.len(),
                        i.report.usage.cost_usd
                    ),
                });
            }
        }
        entries.sort_by_key(|e| e.at);
        entries
    }
}

/// An investigation's report, once it has one.
fn investigation_view(investigation: &Investigation) -> Option<InvestigationView> {
    let (report, at) = investigation.report()?;
    Some(InvestigationView {
        investigation_id: investigation.id().to_owned(),
        question: investigation.summary().question.unwrap_or_default(),
        at,
        report: report.clone(),
    })
}

/// `<kind>/<namespace>/<name>` → the namespace.
fn target_namespace(target: Option<&str>) -> Option<String> {
    let mut parts = target?.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(namespace), Some(_)) if !namespace.is_empty() => Some(namespace.to_owned()),
        _ => None,
    }
}

fn alert_view(a: &Envelope<Alert>) -> AlertView {
    AlertView {
        id: a.id,
        name: a.payload.name.clone(),
        severity: a.payload.severity,
        status: match a.payload.status {
            opsmesh_proto::alert::AlertStatus::Firing => "firing".into(),
            opsmesh_proto::alert::AlertStatus::Resolved => "resolved".into(),
        },
        source: a.payload.source.clone(),
        sid: a.payload.sid.clone(),
        results_link: a.payload.results_link.clone(),
        entity: a.payload.entity.target(),
        received_at: a.payload.received_at,
        rows: a.payload.rows.len(),
    }
}

fn decision_view(r: &Envelope<Remediation>) -> DecisionView {
    DecisionView {
        seq: r.payload.ledger.seq,
        state: r.payload.state,
        reason: r.payload.reason.clone(),
        at: r.occurred_at,
        action: r.payload.action.clone(),
        projected_effect: r.payload.projected_effect.clone(),
        projected_saving_usd: r.payload.projected_saving_usd,
        verification: r.payload.verification.clone(),
        hash: r.payload.ledger.hash.clone(),
        prev_hash: r.payload.ledger.prev_hash.clone(),
    }
}

fn approval_view(a: &Envelope<Approval>) -> ApprovalView {
    ApprovalView {
        id: a.id,
        idempotency_key: a.payload.idempotency_key.clone(),
        decision: a.payload.decision,
        approver: a.payload.approver.clone(),
        comment: a.payload.comment.clone(),
        at: a.occurred_at,
    }
}
