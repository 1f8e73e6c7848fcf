//! The Kyverno rule: a policy denies a workload; the fix is for the developer, not the
//! cluster.

use serde_json::json;

use opsmesh_proto::{ActionKind, RootCause, Target, alert::Alert};

use super::{EvidenceLog, Finding, isvc_target, proposal, row_value};
use crate::{policy_fixes, telemetry::TelemetryStore};

pub(super) fn policy_rule(
    alert: &Alert,
    alert_ev: &str,
    namespace: &str,
    policy: &str,
    store: &TelemetryStore,
    log: &mut EvidenceLog,
) -> Option<Finding> {
    let reports = store.failing_policies(namespace, Some(policy));
    let mut ev: Vec<String> = vec![alert_ev.to_owned()];
    ev.extend(reports.iter().map(|r| log.telemetry(r)));
    let resource = row_value(alert, &["resource", "resource_name", "object"])
        .map(str::to_owned)
        .or_else(|| reports.first().map(|r| r.record.resource.clone()));
    let target = resource_target(namespace, resource.as_deref());
    let message = reports.first().map(|r| r.record.message.clone());
    let fix = policy_fixes::fix_for(policy, message.as_deref());
    let ev_refs: Vec<&str> = ev.iter().map(String::as_str).collect();
    Some(Finding {
        root_cause: RootCause::PolicyViolation,
        confidence: if reports.is_empty() { 0.75 } else { 0.95 },
        target: Some(target.clone()),
        summary: format!("Kyverno policy {policy} denies {target}: {}", fix.title),
        explanation: format!(
            "{} ({}). Nothing is changed in the cluster: the fix is for the developer.",
            fix.explanation,
            ev.join(", ")
        ),
        actions: vec![proposal(
            ActionKind::SuggestPolicyFix,
            &target,
            json!({"policy": policy}),
            &ev_refs,
            "the workload must change, not the cluster".into(),
        )],
        developer_fix: Some(fix.yaml),
        evidence: Vec::new(),
        query: format!("Kyverno policy {policy} fix"),
    })
}

/// `Pod/name`, `kind/ns/name` or a bare name (an InferenceService in the namespace).
fn resource_target(namespace: &str, resource: Option<&str>) -> String {
    match resource {
        None => Target::Namespace(namespace.to_owned()).to_string(),
        Some(r) => match r.split('/').collect::<Vec<_>>().as_slice() {
            [name] => isvc_target(namespace, name),
            [kind, name] => Target::namespaced(kind, namespace, name).to_string(),
            _ => r.to_lowercase(),
        },
    }
}
