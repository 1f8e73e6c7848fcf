//! The ArgoCD rule: an application out of sync with git is synced.

use serde_json::json;

use opsmesh_proto::{ActionKind, RootCause, Target};

use super::{EvidenceLog, Finding, none_finding, proposal};
use crate::telemetry::TelemetryStore;

pub(super) fn gitops_rule(
    alert_ev: &str,
    namespace: &str,
    app: &str,
    store: &TelemetryStore,
    log: &mut EvidenceLog,
) -> Option<Finding> {
    let target = Target::Application {
        namespace: None,
        name: app.to_owned(),
    }
    .to_string();
    let observed = store.application(app)?;
    let ev = log.telemetry(&observed);
    let g = &observed.record;
    if g.sync == "Synced" {
        return Some(none_finding(
            &target,
            format!("{app} is Synced and {}", g.health),
            &[alert_ev, &ev],
        ));
    }
    Some(Finding {
        root_cause: RootCause::GitopsDrift,
        confidence: 0.9,
        target: Some(target.clone()),
        summary: format!("ArgoCD application {app} is {}; sync it to git", g.sync),
        explanation: format!(
            "{app} (namespace {namespace}) reports sync {} and health {} at revision {} ({alert_ev}, {ev}): \
             the live state differs from git. A sync restores the declared state.",
            g.sync,
            g.health,
            g.revision.as_deref().unwrap_or("unknown")
        ),
        actions: vec![proposal(
            ActionKind::ArgocdSync,
            &target,
            json!({}),
            &[alert_ev, &ev],
            "git is the source of truth".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: "ArgoCD OutOfSync drift sync".into(),
    })
}
