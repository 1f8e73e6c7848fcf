//! Judging a played scenario: what was observed on the bus and asked of the cluster, against
//! the scenario's expectations (incidents, root cause, actions, an unchanged cluster, outcome,
//! time to outcome).

use std::time::Duration;

use serde_json::{Value, json};

use opsmesh_proto::{ActionKind, IncidentState, remediation::ActionMode};
use opsmesh_sim::{Scenario, Simulator, duration::format_duration, scenario::Outcome};

use super::{
    observe::Observed,
    verdict::{ActionSeen, Check, Verdict},
};

/// The verdict on `scenario` from what was observed; `start` is the first alert's virtual
/// time, `outcome_at` when every incident had settled (none: not within the deadline).
pub(super) fn judge(
    scenario: &Scenario,
    o: &Observed,
    sim: &Simulator,
    start: Duration,
    outcome_at: Option<Duration>,
    hec_events: usize,
) -> Verdict {
    let incidents = o.incidents();
    let mut checks = Vec::new();
    let mut check = |name: &str, expected: Value, actual: Value, passed: bool| {
        checks.push(Check {
            name: name.into(),
            expected,
            actual,
            passed,
        });
    };
    let expect = &scenario.expect;
    if let Some(n) = expect.incidents {
        check(
            "incidents",
            json!(n),
            json!(incidents.len()),
            incidents.len() == n as usize,
        );
    }
    if let Some(rc) = expect.root_cause {
        let mut actual: Vec<String> = Vec::new();
        let mut all = !incidents.is_empty();
        for i in &incidents {
            match o
                .diagnoses
                .iter()
                .rev()
                .find(|(_, d)| d.incident_id.as_deref() == Some(i.as_str()))
            {
                Some((_, d)) => {
                    all &= d.payload.root_cause == rc;
                    actual.push(d.payload.root_cause.to_string());
                }
                None => {
                    all = false;
                    actual.push("none diagnosed".into());
                }
            }
        }
        actual.dedup();
        check("root_cause", json!(rc), json!(actual.join(",")), all);
    }
    // Executed actions per incident, in order; dry runs, plans and refusals are not executed.
    let mut actions: Vec<ActionSeen> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for i in &incidents {
        let mut last_target = None;
        for (at, r) in o
            .remediations
            .iter()
            .filter(|(_, r)| r.incident_id.as_deref() == Some(i.as_str()))
        {
            let Some(a) = &r.payload.action else { continue };
            last_target = Some(a.target.clone());
            let executed = a.mode != ActionMode::DryRun
                && !matches!(
                    r.payload.state,
                    IncidentState::Planned
                        | IncidentState::AwaitingApproval
                        | IncidentState::Refused
                        | IncidentState::DryRun
                );
            if executed && !keys.contains(&a.idempotency_key) {
                keys.push(a.idempotency_key.clone());
                actions.push(ActionSeen {
                    kind: a.kind,
                    target: a.target.clone(),
                    at: format_duration(*at),
                });
            }
        }
        // Escalated means humans were told: that is the incident's last action.
        if let Some((at, Outcome::State(IncidentState::Escalated))) = o.final_state(i)
            && actions
                .last()
                .is_none_or(|a| a.kind != ActionKind::Escalate)
        {
            let target = last_target
                .or_else(|| {
                    o.diagnoses
                        .iter()
                        .rev()
                        .find(|(_, d)| d.incident_id.as_deref() == Some(i.as_str()))
                        .and_then(|(_, d)| d.payload.target.clone())
                })
                .unwrap_or_default();
            actions.push(ActionSeen {
                kind: ActionKind::Escalate,
                target,
                at: format_duration(at),
            });
        }
    }
    if let Some(expected) = &expect.actions {
        let matches = expected.len() == actions.len()
            && expected
                .iter()
                .zip(&actions)
                .all(|(e, a)| e.kind == a.kind && e.target.as_ref().is_none_or(|t| *t == a.target));
        let exp: Vec<Value> = expected
            .iter()
            .map(|e| json!({"kind": e.kind, "target": e.target}))
            .collect();
        let act: Vec<Value> = actions
            .iter()
            .map(|a| json!({"kind": a.kind, "target": a.target}))
            .collect();
        check("actions", json!(exp), json!(act), matches);
        let mutating = expected
            .iter()
            .any(|e| !matches!(e.kind, ActionKind::SuggestPolicyFix | ActionKind::Escalate));
        if !mutating {
            let changes: Vec<String> = sim
                .requests()
                .into_iter()
                .filter(|r| !r.dry_run && (200..300).contains(&r.status))
                .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
                .collect();
            check(
                "cluster_unchanged",
                json!([]),
                json!(changes),
                changes.is_empty(),
            );
        }
    }
    let outcomes: Vec<Option<Outcome>> = incidents
        .iter()
        .map(|i| o.final_state(i).map(|(_, s)| s))
        .collect();
    let outcome = match outcomes.last() {
        Some(Some(s)) => Some(s.to_string()),
        _ => None,
    };
    if let Some(expected) = expect.outcome {
        // The outcome of the last incident (a recurrence's differs from its predecessor's);
        // every earlier one must have reached an outcome too.
        let passed = outcomes.last() == Some(&Some(expected))
            && outcomes.iter().all(|s| s.is_some_and(Outcome::is_final));
        let actual: Vec<String> = outcomes
            .iter()
            .map(|s| s.map_or("none".into(), |s| s.to_string()))
            .collect();
        check("outcome", json!(expected), json!(actual.join(",")), passed);
    }
    // When the last incident reached its outcome (as observed on the bus, in virtual time).
    let time_to_outcome = outcome_at
        .and_then(|_| {
            incidents
                .iter()
                .filter_map(|i| o.final_state(i).map(|(t, _)| t))
                .max()
        })
        .map(|t| t.saturating_sub(start));
    if let Some(within) = expect.within {
        check(
            "within",
            json!(format_duration(within.0)),
            json!(time_to_outcome.map(format_duration)),
            time_to_outcome.is_some_and(|t| t <= within.0),
        );
    }
    let llm_tokens: u64 = o
        .diagnoses
        .iter()
        .map(|(_, d)| d.payload.llm.prompt_tokens + d.payload.llm.completion_tokens)
        .sum();
    Verdict {
        scenario: scenario.name.clone(),
        passed: checks.iter().all(|c| c.passed),
        error: None,
        checks,
        incidents: incidents.len(),
        actions,
        outcome,
        time_to_outcome: time_to_outcome.map(format_duration),
        llm_tokens,
        hec_events,
    }
}
