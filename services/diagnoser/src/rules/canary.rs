//! The canary rule: KServe splits the traffic between a canary revision and the stable one,
//! and the alert's rows (the search that measures error rates per revision) show the canary
//! failing more requests than the stable revision. Its traffic goes to 0; the stable revision
//! serves everything and the canary stays deployed for the developers to look at.

use serde_json::json;

use opsmesh_proto::{ActionKind, RootCause, alert::Alert, telemetry::ModelHealth};

use super::{Finding, RuleSettings, proposal, row_value};

fn rate(alert: &Alert, names: &[&str]) -> Option<f64> {
    row_value(alert, names)?
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r >= 0.0)
}

pub(super) fn canary_rule(
    alert: &Alert,
    target: &str,
    m: &ModelHealth,
    settings: &RuleSettings,
    ev: &[&str],
) -> Option<Finding> {
    let canary = m.traffic.iter().find(|t| t.latest && t.percent > 0)?;
    let stable = m.traffic.iter().find(|t| !t.latest && t.percent > 0)?;
    let canary_rate = rate(alert, &["canary_error_rate", "error_rate"])?;
    let stable_rate = rate(alert, &["stable_error_rate", "baseline_error_rate"])?;
    if canary_rate < stable_rate * settings.canary_error_ratio
        || canary_rate - stable_rate < settings.canary_min_error_delta
    {
        return None;
    }
    Some(Finding {
        root_cause: RootCause::CanaryRegression,
        confidence: 0.85,
        target: Some(target.to_owned()),
        summary: format!(
            "{target}: canary {} fails {canary_rate} of requests against {stable_rate} on the stable {}; send it no traffic",
            canary.revision, stable.revision
        ),
        explanation: format!(
            "KServe routes {}% of the traffic to the canary revision {} and {}% to the stable \
             revision {} ({}). The alert's rows show an error rate of {canary_rate} on the canary \
             against {stable_rate} on the stable revision, at least {}× and {} above it. Setting \
             canaryTrafficPercent to 0 sends every request to the stable revision without \
             deleting the canary.",
            canary.percent,
            canary.revision,
            stable.percent,
            stable.revision,
            ev.join(", "),
            settings.canary_error_ratio,
            settings.canary_min_error_delta
        ),
        actions: vec![proposal(
            ActionKind::SetCanaryTraffic,
            target,
            json!({
                "traffic_percent": 0,
                "previous_traffic_percent": m.canary_traffic_percent.unwrap_or(canary.percent),
                "canary_revision": canary.revision,
                "stable_revision": stable.revision,
            }),
            ev,
            format!("the canary errs at {canary_rate} against {stable_rate}"),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: "canary revision error rate stable traffic canaryTrafficPercent".into(),
    })
}
