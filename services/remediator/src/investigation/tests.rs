use chrono::Utc;
use serde_json::json;

use opsmesh_proto::{
    investigation::{Finding, StopReason},
    remediation::ActionRecord,
};

use super::*;
use crate::{
    ledger::{Entry, fixtures::states},
    plan::{self, Plan},
    policy::History,
};

const ISVC: &str = "inferenceservice/ml-team-a/llama";

fn proposal(
    kind: ActionKind,
    target: &str,
    params: serde_json::Value,
    cites: &[&str],
) -> ActionProposal {
    ActionProposal {
        kind,
        target: target.into(),
        params: serde_json::from_value(params).unwrap(),
        evidence_ids: cites.iter().map(|c| c.to_string()).collect(),
        rationale: "the tool results show it".into(),
    }
}

fn patch_memory(target: &str, cites: &[&str]) -> ActionProposal {
    proposal(
        ActionKind::PatchMemoryLimit,
        target,
        json!({"memory_limit": "640Mi", "previous_memory_limit": "256Mi"}),
        cites,
    )
}

fn report(root_cause: RootCause, proposals: Vec<ActionProposal>) -> InvestigationReport {
    InvestigationReport {
        state: InvestigationState::Completed,
        stop_reason: StopReason::Answered,
        stop_detail: "answered".into(),
        summary: Some("the predictor is killed at its memory limit".into()),
        findings: vec![Finding {
            claim: "OOMKilled, exit code 137".into(),
            evidence_ids: vec!["t1".into()],
        }],
        root_cause,
        risk: None,
        proposed_actions: proposals,
        evidence: vec![
            ToolEvidence {
                id: "t1".into(),
                tool: "splunk_search".into(),
                arguments: json!({"spl": "search index=k8s OOMKilled"}),
                result: "reason=OOMKilled exit_code=137".into(),
            },
            ToolEvidence {
                id: "t2".into(),
                tool: "container_states".into(),
                arguments: json!({"namespace": "ml-team-a", "name": "llama"}),
                result: "lastState.terminated.reason=OOMKilled".into(),
            },
        ],
        steps: Vec::new(),
        usage: Default::default(),
        discarded_by_reason: Default::default(),
    }
}

fn event(incident: Option<&str>, update: InvestigationUpdate) -> Envelope<InvestigationEvent> {
    Envelope::new(
        "opsmesh-diagnoser",
        "test-cluster",
        incident.map(str::to_owned),
        InvestigationEvent {
            investigation_id: format!("{}/1", incident.unwrap_or("inv-1")),
            question: "why is it failing?".into(),
            namespace: None,
            update,
        },
    )
}

fn report_event(
    incident: Option<&str>,
    report: InvestigationReport,
) -> Envelope<InvestigationEvent> {
    event(incident, InvestigationUpdate::Report(Box::new(report)))
}

#[test]
fn only_a_completed_incident_report_proposing_more_than_escalate_is_taken_up() {
    let oom = || report(RootCause::OomKilled, vec![patch_memory(ISVC, &["t1"])]);
    let e = report_event(Some("i-1"), oom());
    let (incident, taken) = report_of(&e).unwrap();
    assert_eq!((incident, taken.proposed_actions.len()), ("i-1", 1));

    assert_eq!(
        report_of(&report_event(None, oom())).unwrap_err(),
        Ignored::NotIncident
    );
    let mut over = oom();
    over.state = InvestigationState::OverBudget;
    assert_eq!(
        report_of(&report_event(Some("i-1"), over)).unwrap_err(),
        Ignored::NotCompleted
    );
    let escalate_only = report(
        RootCause::Unknown,
        vec![proposal(ActionKind::Escalate, ISVC, json!({}), &["t1"])],
    );
    assert_eq!(
        report_of(&report_event(Some("i-1"), escalate_only)).unwrap_err(),
        Ignored::NoProposals
    );
    assert_eq!(
        report_of(&report_event(
            Some("i-1"),
            report(RootCause::OomKilled, vec![])
        ))
        .unwrap_err(),
        Ignored::NoProposals
    );
    let status = event(
        Some("i-1"),
        InvestigationUpdate::Status(opsmesh_proto::investigation::InvestigationStatus {
            state: InvestigationState::Running,
            requested_by: "diagnoser".into(),
            detail: String::new(),
        }),
    );
    assert_eq!(report_of(&status).unwrap_err(), Ignored::NotReport);
}

/// A ledger of `path`, the escalation (last record) giving `reason`, with `action` on every
/// planned record.
fn ledger(path: &[IncidentState], action: Option<ActionKind>, reason: &str) -> IncidentLedger {
    let mut entries: Vec<Entry> = states("i-1", path, ISVC, None)
        .into_iter()
        .map(|envelope| Entry {
            occurred_at: Utc::now(),
            record: envelope.payload.clone(),
            envelope,
        })
        .collect();
    for e in &mut entries {
        if e.record.state == IncidentState::Planned {
            e.record.action = action.map(|kind| ActionRecord {
                kind,
                target: ISVC.into(),
                params: Default::default(),
                idempotency_key: format!("i-1:{kind}:{ISVC}"),
                mode: ActionMode::Auto,
                approved_by: None,
            });
        }
    }
    if let Some(last) = entries.last_mut() {
        last.record.reason = reason.into();
    }
    IncidentLedger { entries }
}

#[test]
fn only_an_escalation_where_the_rules_had_nothing_to_do_is_reopened_and_only_once() {
    use IncidentState::*;
    let nothing = "no action recommended for unknown; humans notified";
    // Escalated at planning: no proposal, or only telling humans.
    assert_eq!(
        may_take_up(&ledger(&[Received, Escalated], None, nothing)),
        Ok(())
    );
    assert_eq!(
        may_take_up(&ledger(
            &[Received, Planned, Escalated],
            Some(ActionKind::Escalate),
            "humans notified about it; nothing changed in the cluster"
        )),
        Ok(())
    );
    // After the rules planned, proposed, ran or rolled back an action: humans own it.
    for (path, action) in [
        (
            &[Received, Planned, Escalated][..],
            Some(ActionKind::PatchMemoryLimit),
        ),
        (&[Received, Planned, AwaitingApproval, Escalated][..], None),
        (
            &[
                Received, Planned, Executing, Verifying, RolledBack, Escalated,
            ][..],
            Some(ActionKind::PatchMemoryLimit),
        ),
        (&[Received, Planned, Executing, Escalated][..], None),
    ] {
        assert_eq!(
            may_take_up(&ledger(path, action, "failed; humans notified")),
            Err(Ignored::EscalationNotReopenable),
            "{path:?}"
        );
    }
    // Escalated because it was stuck before the rules planned.
    assert_eq!(
        may_take_up(&ledger(
            &[Received, Escalated],
            None,
            &format!("{STUCK}received for 15m; humans notified")
        )),
        Err(Ignored::EscalationNotReopenable)
    );
    // Not escalated; nothing known; already taken up (planned, or refused, then on).
    for path in [
        &[Received, Planned, Executing, Verifying, Resolved][..],
        &[Received, NoAction][..],
        &[Received, Planned, AwaitingApproval][..],
    ] {
        assert_eq!(
            may_take_up(&ledger(path, None, "r")),
            Err(Ignored::IncidentNotEscalated)
        );
    }
    assert_eq!(
        may_take_up(&IncidentLedger::default()),
        Err(Ignored::UnknownIncident)
    );
    for path in [
        &[Received, Escalated, Planned][..],
        &[Received, Escalated, Refused][..],
        &[Received, Escalated, Planned, AwaitingApproval, Escalated][..],
    ] {
        let l = ledger(path, None, "r");
        assert!(l.reopened(), "{path:?}");
        assert_eq!(may_take_up(&l), Err(Ignored::AlreadyTakenUp), "{path:?}");
    }
}

#[test]
fn the_current_attempt_is_what_follows_the_reopened_escalation() {
    use IncidentState::*;
    let l = ledger(
        &[Received, Planned, Escalated, Planned, AwaitingApproval],
        Some(ActionKind::Escalate),
        "proposal",
    );
    assert!(l.reopened());
    assert_eq!(l.attempt().len(), 2);
    assert_eq!(
        l.planned().len(),
        1,
        "the rules' escalate record is not part of the investigation's plan"
    );
    let never = ledger(
        &[Received, Planned, Escalated],
        Some(ActionKind::Escalate),
        "r",
    );
    assert!(!never.reopened());
    assert_eq!(never.attempt().len(), 3);
    assert_eq!(origin(&never), None);

    let report = uuid::Uuid::now_v7();
    let taken_up = ledger(
        &[Received, Escalated, Planned],
        Some(ActionKind::PatchMemoryLimit),
        &format!(
            "{}: OOMKilled: twice; root cause oom_killed",
            source("i-1/1", report)
        ),
    );
    assert_eq!(
        origin(&taken_up),
        Some(format!("investigation i-1/1, report {report}").as_str())
    );
}

fn policy(namespaces: &[&str]) -> PolicyConfig {
    PolicyConfig {
        allowed_namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        ..PolicyConfig::default()
    }
}

/// The report's proposals through the remediator's plan, as the engine runs it.
fn planned(report: &InvestigationReport, namespaces: &[&str]) -> Plan {
    let library = Library::built_in().unwrap();
    let diagnosis = as_diagnosis("i-1", "i-1/1", report, &library);
    plan::plan(
        "i-1",
        &diagnosis,
        &library,
        &requiring_approval(&policy(namespaces)),
        &History::default(),
        Utc::now(),
    )
}

#[test]
fn a_report_is_planned_by_its_root_causes_runbook_and_always_awaits_a_human() {
    let r = report(
        RootCause::OomKilled,
        vec![patch_memory(ISVC, &["t1", "t2"])],
    );
    let diagnosis = as_diagnosis("i-1", "i-1/1", &r, &Library::built_in().unwrap());
    let runbook = diagnosis.runbook.as_ref().expect("a runbook section");
    assert_eq!(
        (runbook.id.as_str(), runbook.section.as_str()),
        ("oom-killed", "Raise the memory limit")
    );
    assert!(
        diagnosis
            .evidence
            .iter()
            .all(|e| e.values.is_empty() && e.source != EvidenceSource::Telemetry),
        "tool results are cited, never read as observations: {:?}",
        diagnosis.evidence
    );
    // Auto mode with the namespace allowed: still an approval.
    let Plan::Act { actions, mode, .. } = planned(&r, &["ml-team-a"]) else {
        panic!("planned: {:?}", planned(&r, &["ml-team-a"]));
    };
    assert_eq!(mode, ActionMode::Approve);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].record.kind, ActionKind::PatchMemoryLimit);
    assert_eq!(actions[0].record.mode, ActionMode::Approve);
    assert!(
        actions[0].reason.contains("evidence t1, t2"),
        "{}",
        actions[0].reason
    );
}

#[test]
fn proposals_outside_the_runbook_the_policy_or_the_evidence_are_refused() {
    let refused = |r: &InvestigationReport, namespaces: &[&str]| match planned(r, namespaces) {
        Plan::Refused(refusal) => (refusal.code, refusal.reason),
        other => panic!("not refused: {other:?}"),
    };
    // The OOM runbook allows no scaling to zero (the prompt injection's wish).
    let scale = report(
        RootCause::OomKilled,
        vec![proposal(
            ActionKind::ScaleInferenceService,
            ISVC,
            json!({"replicas": 0}),
            &["t1"],
        )],
    );
    let (code, reason) = refused(&scale, &["ml-team-a"]);
    assert_eq!(code, "not_in_runbook", "{reason}");
    assert!(reason.contains("scale_inference_service"), "{reason}");
    // A namespace outside the allow-list.
    let elsewhere = report(
        RootCause::OomKilled,
        vec![patch_memory("inferenceservice/ml-team-z/llama", &["t1"])],
    );
    assert_eq!(
        refused(&elsewhere, &["ml-team-a"]).0,
        "namespace_not_allowed"
    );
    // Evidence the report does not carry (defence in depth: the diagnoser drops these).
    let invented = report(
        RootCause::OomKilled,
        vec![patch_memory(ISVC, &["t1", "t9"])],
    );
    let (code, reason) = refused(&invented, &["ml-team-a"]);
    assert_eq!(code, "no_evidence");
    assert!(reason.contains("\"t9\""), "{reason}");
    // A root cause no runbook has.
    let mut none = report(RootCause::OomKilled, vec![patch_memory(ISVC, &["t1"])]);
    none.root_cause = RootCause::Unknown;
    assert_eq!(refused(&none, &["ml-team-a"]).0, "not_in_runbook");
}

#[test]
fn approval_is_required_whatever_the_mode_but_dry_run_stays_dry_run() {
    let mut p = policy(&["ml-team-a"]);
    p.modes
        .insert(ActionKind::RollbackImage, ActionMode::DryRun);
    p.modes.insert(ActionKind::ArgocdSync, ActionMode::Auto);
    let strict = requiring_approval(&p);
    assert_eq!(strict.mode, ActionMode::Approve);
    assert_eq!(
        strict.mode_of(ActionKind::RollbackImage),
        ActionMode::DryRun
    );
    assert_eq!(strict.mode_of(ActionKind::ArgocdSync), ActionMode::Approve);
    assert_eq!(strict.allowed_namespaces, p.allowed_namespaces);
}
