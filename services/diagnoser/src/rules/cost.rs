//! The cost rule: a namespace's spend against its budget over the billing month.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::json;

use opsmesh_proto::{ActionKind, RootCause, Target, alert::Alert};

use super::{EvidenceLog, Finding, isvc_target, none_finding, proposal, row_value};
use crate::telemetry::TelemetryStore;

/// Hours left in the billing window: the calendar month, UTC.
fn hours_left_in_month(now: DateTime<Utc>) -> f64 {
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (end - now).num_seconds().max(0) as f64 / 3600.0
}

pub(super) fn cost_rule(
    alert: &Alert,
    alert_ev: &str,
    namespace: &str,
    store: &TelemetryStore,
    log: &mut EvidenceLog,
    now: DateTime<Utc>,
) -> Option<Finding> {
    let number = |names: &[&str]| row_value(alert, names).and_then(|v| v.parse::<f64>().ok());
    let (total, pods) = store.costs(namespace);
    let mut ev: Vec<String> = vec![alert_ev.to_owned()];
    let total_ev = total.as_ref().map(|t| log.telemetry(t));
    ev.extend(total_ev.clone());
    let hourly = total
        .as_ref()
        .map(|t| t.record.hourly_cost_usd)
        .or_else(|| number(&["hourly_cost", "hourly_cost_usd", "cost"]))?;
    let telemetry_budget = total.as_ref().and_then(|t| t.record.hourly_budget_usd);
    let budget =
        telemetry_budget.or_else(|| number(&["budget", "hourly_budget_usd", "hourly_budget"]))?;
    // Alert fields are whatever the alert's sender wrote: an overrun known only from them may
    // advise a budget owner, never scale or cap.
    let from_telemetry = total.is_some() && telemetry_budget.is_some();
    let target_ns = Target::Namespace(namespace.to_owned()).to_string();
    if hourly <= budget {
        let refs: Vec<&str> = ev.iter().map(String::as_str).collect();
        return Some(none_finding(
            &target_ns,
            format!("{namespace} costs ${hourly:.2}/h, within its ${budget:.2}/h budget"),
            &refs,
        ));
    }
    // Workloads by cost share, with the replicas they usually run: OpenCost's history, else
    // the smallest size seen in the telemetry window.
    let usual = total
        .as_ref()
        .map(|t| t.record.baseline_replicas.clone())
        .unwrap_or_default();
    let models = store.models_in(namespace);
    let mut workloads: Vec<(String, f64, u32, u32)> = models
        .iter()
        .map(|(latest, oldest)| {
            let name = latest.record.name.clone();
            let prefix = format!("{name}-predictor");
            let cost: f64 = pods
                .iter()
                .filter(|p| {
                    p.record
                        .pod
                        .as_deref()
                        .is_some_and(|pod| pod.starts_with(&prefix))
                })
                .map(|p| p.record.hourly_cost_usd)
                .sum();
            (
                name,
                cost,
                latest.record.replicas,
                usual
                    .get(&prefix)
                    .copied()
                    .unwrap_or(oldest.record.replicas)
                    .min(latest.record.replicas),
            )
        })
        .collect();
    workloads.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (latest, _) in &models {
        ev.push(log.telemetry(latest));
    }
    let overage = (hourly - budget) / budget * 100.0;
    let shares: Vec<String> = workloads
        .iter()
        .map(|(n, c, r, b)| {
            format!(
                "{n} ${c:.2}/h ({:.0}%, {r} replicas, usually {b})",
                c / hourly * 100.0
            )
        })
        .collect();
    let advise_only = if !from_telemetry {
        Some((
            "the cost and budget come from the alert's fields, not from OpenCost telemetry, so nothing is scaled or capped on them",
            "cost figures not from telemetry",
        ))
    } else if workloads.is_empty() {
        Some((
            "no per-workload telemetry is available to size a quota or a scale-down safely",
            "no workload telemetry",
        ))
    } else {
        None
    };
    if let Some((why, rationale)) = advise_only {
        let refs: Vec<&str> = ev.iter().map(String::as_str).collect();
        return Some(Finding {
            root_cause: RootCause::CostOverrun,
            confidence: 0.6,
            target: Some(target_ns.clone()),
            summary: format!(
                "{namespace} costs ${hourly:.2}/h against a ${budget:.2}/h budget ({overage:.0}% over)"
            ),
            explanation: format!(
                "{namespace} is {overage:.0}% over budget ({}), but {why}; a budget owner decides.",
                ev.join(", ")
            ),
            actions: vec![proposal(
                ActionKind::Escalate,
                &target_ns,
                json!({}),
                &refs,
                rationale.into(),
            )],
            developer_fix: None,
            evidence: Vec::new(),
            query: "cost over budget escalate budget owner".into(),
        });
    }
    let hours = hours_left_in_month(now);
    let mut actions = Vec::new();
    let mut released = 0.0;
    let refs: Vec<&str> = ev.iter().map(String::as_str).collect();
    if let Some((name, cost, replicas, baseline)) = workloads.iter().find(|w| w.2 > w.3 && w.3 > 0)
    {
        released = cost * f64::from(replicas - baseline) / f64::from(*replicas) / hourly;
        actions.push(proposal(
            ActionKind::ScaleInferenceService,
            &isvc_target(namespace, name),
            json!({"replicas": baseline, "previous_replicas": replicas}),
            &refs,
            format!("back to the {baseline} replicas it ran before the spike"),
        ));
    }
    let pods_after: u32 = workloads
        .iter()
        .map(|w| if w.2 > w.3 && w.3 > 0 { w.3 } else { w.2 })
        .sum();
    // One pod of room above the remediated size, so rolling updates can still surge.
    let quota_pods = pods_after + 1;
    let saving = hourly * released * hours;
    actions.push(proposal(
        ActionKind::ApplyResourceQuota,
        &target_ns,
        json!({"pods": quota_pods, "projected_saving_usd": (saving * 100.0).round() / 100.0}),
        &refs,
        "cap further scale-out at the post-remediation size".into(),
    ));
    let yaml = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: opsmesh-cost-guard\n  namespace: {namespace}\nspec:\n  hard:\n    pods: \"{quota_pods}\"\n---\napiVersion: v1\nkind: LimitRange\nmetadata:\n  name: opsmesh-default-limits\n  namespace: {namespace}\nspec:\n  limits:\n    - type: Container\n      default:\n        memory: 1Gi\n      defaultRequest:\n        memory: 512Mi\n"
    );
    Some(Finding {
        root_cause: RootCause::CostOverrun,
        confidence: 0.9,
        target: Some(target_ns.clone()),
        summary: format!(
            "{namespace} costs ${hourly:.2}/h against a ${budget:.2}/h budget ({overage:.0}% over)"
        ),
        explanation: format!(
            "{namespace} is {overage:.0}% over budget (${hourly:.2}/h vs ${budget:.2}/h; {}). By share: {}. \
             Projected saving Δ = k·r·t = {hourly:.2} × {released:.3} × {hours:.1} h = ${saving:.2} for the rest of the billing month.",
            ev.join(", "),
            if shares.is_empty() {
                "no per-workload telemetry".into()
            } else {
                shares.join("; ")
            }
        ),
        actions,
        developer_fix: Some(yaml),
        evidence: Vec::new(),
        query: "cost over budget ResourceQuota scale down".into(),
    })
}
