//! Judging a played scenario: what was observed on the bus and asked of the cluster, against
//! the scenario's expectations (incidents, root cause, actions, an unchanged cluster, outcome,
//! time to outcome).

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState, diagnosis::Diagnosis, remediation::ActionMode,
};
use opsmesh_sim::{
    Scenario, Simulator,
    duration::format_duration,
    scenario::{ExpectedAction, Outcome},
};

use super::{
    observe::Observed,
    verdict::{ActionSeen, Check, IncidentSeen, Verdict},
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
    let writes = cluster_changes(sim);
    let executed: Vec<Vec<ActionSeen>> = incidents.iter().map(|i| executed_actions(o, i)).collect();
    if let Some(expected) = &expect.actions {
        let exp: Vec<Value> = expected
            .iter()
            .map(|e| json!({"kind": e.kind, "target": e.target}))
            .collect();
        let act: Vec<Vec<Value>> = executed
            .iter()
            .map(|list| {
                list.iter()
                    .map(|a| json!({"kind": a.kind, "target": a.target}))
                    .collect()
            })
            .collect();
        check(
            "actions",
            json!(exp),
            json!(act),
            is_merge(expected, &executed),
        );
        if !expected.iter().any(|e| is_mutating(e.kind)) {
            check(
                "cluster_unchanged",
                json!([]),
                json!(writes),
                writes.is_empty(),
            );
        }
    }
    let outcomes: Vec<Option<Outcome>> = incidents
        .iter()
        .map(|i| o.final_state(i).map(|(_, s)| s))
        .collect();
    let outcome = summary(&outcomes);
    if let Some(expected) = &expect.outcome {
        let actual: Vec<String> = outcomes
            .iter()
            .map(|s| s.map_or("none".into(), |s| s.to_string()))
            .collect();
        check(
            "outcome",
            json!(expected),
            json!(actual),
            expected.met_by(&outcomes),
        );
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
    let per_incident: Vec<IncidentSeen> = incidents.iter().map(|i| incident_seen(o, i)).collect();
    Verdict {
        scenario: scenario.name.clone(),
        passed: checks.iter().all(|c| c.passed),
        error: None,
        checks,
        incidents: incidents.len(),
        actions: executed.into_iter().flatten().collect(),
        outcome,
        time_to_outcome: time_to_outcome.map(format_duration),
        llm_tokens: per_incident.iter().map(|i| i.llm_tokens).sum(),
        llm_cost_usd: per_incident.iter().map(|i| i.llm_cost_usd).sum(),
        hec_events,
        per_incident,
        cluster_writes: writes,
        investigations: None,
    }
}

/// The actions executed for `incident`, in order: dry runs, plans and refusals are not
/// executed; an escalated incident ends with `escalate` (humans were told).
fn executed_actions(o: &Observed, incident: &str) -> Vec<ActionSeen> {
    let mut actions: Vec<ActionSeen> = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    let mut last_target = None;
    for (at, r) in o
        .remediations
        .iter()
        .filter(|(_, r)| r.incident_id.as_deref() == Some(incident))
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
        if executed && !keys.contains(&a.idempotency_key.as_str()) {
            keys.push(&a.idempotency_key);
            actions.push(ActionSeen {
                kind: a.kind,
                target: a.target.clone(),
                at: format_duration(*at),
            });
        }
    }
    if let Some((at, Outcome::State(IncidentState::Escalated))) = o.final_state(incident)
        && actions
            .last()
            .is_none_or(|a| a.kind != ActionKind::Escalate)
    {
        let target = last_target
            .or_else(|| {
                o.diagnoses
                    .iter()
                    .rev()
                    .find(|(_, d)| d.incident_id.as_deref() == Some(incident))
                    .and_then(|(_, d)| d.payload.target.clone())
            })
            .unwrap_or_default();
        actions.push(ActionSeen {
            kind: ActionKind::Escalate,
            target,
            at: format_duration(at),
        });
    }
    actions
}

/// What became of `incident`, timed from the first alert it was opened for.
fn incident_seen(o: &Observed, incident: &str) -> IncidentSeen {
    let diagnoses: Vec<&(Duration, Envelope<Diagnosis>)> = o
        .diagnoses
        .iter()
        .filter(|(_, d)| d.incident_id.as_deref() == Some(incident))
        .collect();
    let opened = o
        .alerts
        .iter()
        .filter(|(_, a)| {
            a.incident_id.as_deref() == Some(incident)
                || diagnoses
                    .iter()
                    .any(|(_, d)| d.payload.alert_ids.contains(&a.id))
        })
        .map(|(at, _)| *at)
        .min();
    let since = |at: Duration| opened.map(|o| at.saturating_sub(o));
    let latest = diagnoses.last().map(|(_, d)| &d.payload);
    let outcome = o.final_state(incident);
    IncidentSeen {
        id: incident.to_owned(),
        root_cause: latest.map(|d| d.root_cause),
        target: latest.and_then(|d| d.target.clone()),
        time_to_diagnosis: diagnoses.first().and_then(|(at, _)| since(*at)),
        outcome: outcome.map(|(_, s)| s.to_string()),
        time_to_outcome: outcome.and_then(|(at, _)| since(at)),
        llm_tokens: diagnoses
            .iter()
            .map(|(_, d)| d.payload.llm.prompt_tokens + d.payload.llm.completion_tokens)
            .sum(),
        llm_cost_usd: diagnoses.iter().map(|(_, d)| d.payload.llm.cost_usd).sum(),
    }
}

/// Whether an action changes the cluster (`suggest_policy_fix` and `escalate` tell people).
pub(super) fn is_mutating(kind: ActionKind) -> bool {
    !matches!(
        kind,
        ActionKind::AdviseCapacity | ActionKind::SuggestPolicyFix | ActionKind::Escalate
    )
}

/// Every accepted, non-dry-run write the cluster received.
fn cluster_changes(sim: &Simulator) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| !r.dry_run && (200..300).contains(&r.status))
        .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
        .collect()
}

/// The run's outcome in a word: the incidents' outcome when they share one, else each in the
/// order opened; none while an incident has not reached one.
fn summary(outcomes: &[Option<Outcome>]) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for outcome in outcomes {
        let name = (*outcome)?.to_string();
        names.push(name);
    }
    if names.is_empty() {
        return None;
    }
    names.dedup();
    Some(names.join(","))
}

/// Whether `expected` is the incidents' executed actions merged: each incident's in the
/// order it executed them, the incidents in any order (the mesh handles them concurrently).
/// An expected action without a target matches any target.
pub(super) fn is_merge(expected: &[ExpectedAction], incidents: &[Vec<ActionSeen>]) -> bool {
    let total: usize = incidents.iter().map(Vec::len).sum();
    total == expected.len()
        && merge_from(
            expected,
            incidents,
            &mut vec![0; incidents.len()],
            &mut HashSet::new(),
        )
}

/// Depth-first over which incident supplies the next expected action. States that failed
/// are remembered by what is left of each incident (sorted), so incidents with the same
/// actions are not tried in every order.
fn merge_from(
    expected: &[ExpectedAction],
    incidents: &[Vec<ActionSeen>],
    next: &mut Vec<usize>,
    dead: &mut HashSet<Vec<String>>,
) -> bool {
    let Some(want) = expected.get(next.iter().sum::<usize>()) else {
        return true;
    };
    let mut left: Vec<String> = incidents
        .iter()
        .zip(next.iter())
        .map(|(list, n)| {
            list[*n..]
                .iter()
                .map(|a| format!("{} {}", a.kind, a.target))
                .collect::<Vec<_>>()
                .join(";")
        })
        .collect();
    left.sort();
    if dead.contains(&left) {
        return false;
    }
    for i in 0..incidents.len() {
        let Some(action) = incidents[i].get(next[i]) else {
            continue;
        };
        if action.kind == want.kind && want.target.as_ref().is_none_or(|t| *t == action.target) {
            next[i] += 1;
            let found = merge_from(expected, incidents, next, dead);
            next[i] -= 1;
            if found {
                return true;
            }
        }
    }
    dead.insert(left);
    false
}
