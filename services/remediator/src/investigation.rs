//! An investigation's report as proposals. The investigator (the diagnoser's LLM tool loop)
//! changes nothing: its report may propose actions, and for an incident the rules escalated
//! with nothing to do, those proposals go through the same plan as a diagnosis' (runbook
//! section of the report's root cause, its actions and param bounds, evidence, target, guards,
//! policy) — and then always wait for a human, whatever the policy's mode says.
//!
//! Which reports are taken up, and which escalations they may reopen, is decided here from
//! the report and the incident's ledger only, so a redelivered report or a second one, on any
//! replica, after any restart, never plans twice.

use std::collections::BTreeMap;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState, RootCause, Target,
    diagnosis::{ActionProposal, Diagnosis, Evidence, EvidenceSource, RunbookRef},
    investigation::{
        InvestigationEvent, InvestigationReport, InvestigationState, InvestigationUpdate,
        ToolEvidence,
    },
    remediation::ActionMode,
};
use opsmesh_runbooks::{Library, Runbook, Section, SectionSpec};

use crate::{
    config::PolicyConfig,
    ledger::{IncidentLedger, STUCK, is_mutating},
};

/// Why every action an investigation planned waits for a human (in each planned record).
pub const HUMAN_APPROVES: &str = "proposed by the investigator (LLM): a human approves";

/// How the records of a plan an investigation's report made name it: `investigation <id>,
/// report <envelope id>`, then `: ` and what it found.
pub fn source(investigation_id: &str, report: uuid::Uuid) -> String {
    format!("investigation {investigation_id}, report {report}")
}

/// The investigation whose report took the incident up, as its first record names it
/// ([`source`]); `None` for an incident the rules' diagnosis drives.
pub fn origin(ledger: &IncidentLedger) -> Option<&str> {
    if !ledger.reopened() {
        return None;
    }
    let reason = &ledger.attempt().first()?.record.reason;
    reason
        .starts_with("investigation ")
        .then(|| reason.split_once(": ").map(|(origin, _)| origin))
        .flatten()
}

/// Why a report, or one of its updates, was not taken up: a stable code (metrics label) and
/// the reason in words (log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A status or a step: only the report proposes.
    NotReport,
    /// An on-demand investigation: it is about no incident, so nothing waits for its report.
    NotIncident,
    /// Failed or over budget: an unfinished report proposes nothing.
    NotCompleted,
    /// No proposal besides `escalate` (the incident is with humans already).
    NoProposals,
    /// The ledger holds no record of the incident.
    UnknownIncident,
    /// The incident was not escalated (resolved, refused, acting, waiting for a human…).
    IncidentNotEscalated,
    /// Escalated after the rules proposed or took an action, or because it was stuck: humans
    /// own it.
    EscalationNotReopenable,
    /// An investigation's report already took the incident up (this one again, or another).
    AlreadyTakenUp,
}

impl Ignored {
    pub fn code(self) -> &'static str {
        match self {
            Self::NotReport => "not_report",
            Self::NotIncident => "not_incident",
            Self::NotCompleted => "not_completed",
            Self::NoProposals => "no_proposals",
            Self::UnknownIncident => "unknown_incident",
            Self::IncidentNotEscalated => "incident_not_escalated",
            Self::EscalationNotReopenable => "escalation_not_reopenable",
            Self::AlreadyTakenUp => "already_taken_up",
        }
    }

    pub fn why(self) -> &'static str {
        match self {
            Self::NotReport => "a status or step of an investigation; only its report proposes",
            Self::NotIncident => "an on-demand investigation about no incident",
            Self::NotCompleted => "the investigation did not complete",
            Self::NoProposals => "the report proposes no action besides escalate",
            Self::UnknownIncident => "the ledger holds no record of the incident",
            Self::IncidentNotEscalated => {
                "the incident is not escalated: the rules' decision stands"
            }
            Self::EscalationNotReopenable => {
                "the incident was escalated after the rules proposed or took an action, or because it was stuck: humans own it"
            }
            Self::AlreadyTakenUp => "an investigation's report already took the incident up",
        }
    }
}

/// The incident and the report of `event`, when it is a completed report of an incident's
/// investigation proposing something besides `escalate`.
pub fn report_of(
    event: &Envelope<InvestigationEvent>,
) -> Result<(&str, &InvestigationReport), Ignored> {
    let InvestigationUpdate::Report(report) = &event.payload.update else {
        return Err(Ignored::NotReport);
    };
    let incident = event.incident_id.as_deref().ok_or(Ignored::NotIncident)?;
    if report.state != InvestigationState::Completed {
        return Err(Ignored::NotCompleted);
    }
    if report
        .proposed_actions
        .iter()
        .all(|p| p.kind == ActionKind::Escalate)
    {
        return Err(Ignored::NoProposals);
    }
    Ok((incident, report))
}

/// Whether an investigation's report may take the incident up: it rests escalated because the
/// rules had nothing to do — escalated at planning (no proposal, or only telling humans), no
/// cluster-changing action ever planned, not escalated as stuck — and no report took it up
/// before.
pub fn may_take_up(ledger: &IncidentLedger) -> Result<(), Ignored> {
    let Some(last) = ledger.entries.last() else {
        return Err(Ignored::UnknownIncident);
    };
    if ledger.reopened() {
        return Err(Ignored::AlreadyTakenUp);
    }
    if last.record.state != IncidentState::Escalated {
        return Err(Ignored::IncidentNotEscalated);
    }
    let acted = ledger.entries.iter().any(|e| {
        e.record
            .action
            .as_ref()
            .is_some_and(|a| is_mutating(a.kind))
            || matches!(
                e.record.state,
                IncidentState::AwaitingApproval
                    | IncidentState::Executing
                    | IncidentState::Verifying
                    | IncidentState::RolledBack
                    | IncidentState::DryRun
            )
    });
    if acted || last.record.reason.starts_with(STUCK) {
        return Err(Ignored::EscalationNotReopenable);
    }
    Ok(())
}

/// The report as the diagnosis the plan reads: its root cause, the runbook section of that
/// root cause that allows its proposals, its proposals, and its tool results as evidence.
///
/// The tool results carry no `values`: what the model relayed is cited, never read as an
/// observation, so every guard that needs one is decided from the cluster just before the
/// action runs, and cost figures (which must come from telemetry) never come from a report.
pub fn as_diagnosis(
    incident: &str,
    investigation_id: &str,
    report: &InvestigationReport,
    library: &Library,
) -> Diagnosis {
    Diagnosis {
        alert_ids: Vec::new(),
        fingerprint: incident.to_owned(),
        root_cause: report.root_cause,
        confidence: 0.0,
        target: report.proposed_actions.first().map(|p| p.target.clone()),
        summary: report
            .summary
            .clone()
            .unwrap_or_else(|| format!("investigation {investigation_id}")),
        evidence: report.evidence.iter().map(tool_evidence).collect(),
        runbook: section_for(library, report.root_cause, &report.proposed_actions),
        recommended_actions: report.proposed_actions.clone(),
        explanation: report
            .findings
            .iter()
            .map(|f| format!("{} [{}]", f.claim, f.evidence_ids.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
        narrative: None,
        developer_fix: None,
        llm: report.usage.clone(),
    }
}

fn tool_evidence(t: &ToolEvidence) -> Evidence {
    Evidence {
        id: t.id.clone(),
        // Only the Splunk search is a search; every other tool result is, like an alert's
        // fields, what someone else said (never telemetry).
        source: if t.tool == "splunk_search" {
            EvidenceSource::SplunkSearch
        } else {
            EvidenceSource::Alert
        },
        query: format!("{} {}", t.tool, t.arguments),
        earliest: None,
        latest: None,
        row_count: 0,
        values: BTreeMap::new(),
        error: None,
    }
}

/// The section the proposals follow: among the actionable sections of the runbooks whose
/// root causes include `root_cause`, the first that allows every proposal (kind and target
/// kind), else the first that allows the first proposal's kind, else the first — the plan then
/// refuses what the section does not allow, naming it. `None` when no runbook has this root
/// cause (the plan refuses: no runbook backs the proposals).
pub fn section_for(
    library: &Library,
    root_cause: RootCause,
    proposals: &[ActionProposal],
) -> Option<RunbookRef> {
    let sections: Vec<(&Runbook, &Section, &SectionSpec)> = library
        .runbooks()
        .iter()
        .filter(|r| r.front.root_causes.contains(&root_cause))
        .flat_map(|r| {
            r.sections
                .iter()
                .filter_map(move |s| Some((r, s, s.spec.as_ref()?)))
        })
        .collect();
    let allows = |spec: &SectionSpec, p: &ActionProposal| {
        let target = p.target.parse::<Target>().ok();
        spec.actions
            .iter()
            .any(|a| a.kind == p.kind && target.as_ref().is_none_or(|t| t.kind() == a.target))
    };
    sections
        .iter()
        .find(|(_, _, spec)| proposals.iter().all(|p| allows(spec, p)))
        .or_else(|| {
            sections.iter().find(|(_, _, spec)| {
                proposals
                    .first()
                    .is_some_and(|p| spec.actions.iter().any(|a| a.kind == p.kind))
            })
        })
        .or_else(|| sections.first())
        .map(|(r, s, _)| r.reference(s))
}

/// The policy with every mode at least `approve`: a dry-run mode stays (it is stricter), an
/// auto one waits for a human.
pub fn requiring_approval(policy: &PolicyConfig) -> PolicyConfig {
    let raise = |mode: ActionMode| match mode {
        ActionMode::Auto => ActionMode::Approve,
        other => other,
    };
    let mut strict = policy.clone();
    strict.mode = raise(strict.mode);
    for mode in strict.modes.values_mut() {
        *mode = raise(*mode);
    }
    strict
}

#[cfg(test)]
mod tests;
