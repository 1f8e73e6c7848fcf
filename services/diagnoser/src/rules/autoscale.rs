//! The autoscaler rule: the predictor runs at its `maxReplicas` while the alert's rows (a
//! latency search, one row per time bucket, oldest first) show latency rising. The bound is
//! raised within the namespace's pod quota headroom and `diagnoser.rules.max_replicas_limit`;
//! when neither leaves room the developer gets capacity advice and nothing changes.

use serde_json::json;

use opsmesh_proto::{
    ActionKind, RootCause,
    alert::{Alert, FieldValue},
    telemetry::ModelHealth,
};

use super::{Finding, RuleSettings, proposal};

const LATENCY_FIELDS: [&str; 4] = [
    "p95_latency_ms",
    "p99_latency_ms",
    "latency_p95_ms",
    "latency_ms",
];

/// The first and the last latency over the alert's rows, when at least two rows carry one.
fn latency_trend(alert: &Alert) -> Option<(f64, f64)> {
    let values: Vec<f64> = alert
        .rows
        .iter()
        .filter_map(|row| {
            LATENCY_FIELDS
                .iter()
                .find_map(|f| row.get(*f).and_then(FieldValue::first))?
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        })
        .collect();
    match values.as_slice() {
        [first, .., last] => Some((*first, *last)),
        _ => None,
    }
}

pub(super) fn autoscaler_rule(
    alert: &Alert,
    target: &str,
    m: &ModelHealth,
    settings: &RuleSettings,
    ev: &[&str],
) -> Option<Finding> {
    let max = m.max_replicas?;
    let running = m.ready_replicas.max(m.replicas);
    if running < max {
        return None;
    }
    let (first, last) = latency_trend(alert)?;
    if first <= 0.0 || last < first * settings.latency_rise_ratio {
        return None;
    }
    let scaled = (f64::from(max) * settings.max_replicas_factor).ceil() as u32;
    let mut new_max = scaled.min(settings.max_replicas_limit);
    if let Some(headroom) = m.pod_quota_headroom {
        new_max = new_max.min(max.saturating_add(headroom));
    }
    let headroom = m
        .pod_quota_headroom
        .map_or("no pod quota".into(), |h| format!("pod quota headroom {h}"));
    let situation = format!(
        "KServe's autoscaler runs {running} replicas at maxReplicas {max} ({}) while the \
         latency in the alert's rows rose from {first} ms to {last} ms (at least {}×)",
        ev.join(", "),
        settings.latency_rise_ratio
    );
    let mut params = json!({"previous_max_replicas": max});
    if let Some(h) = m.pod_quota_headroom {
        params["pod_quota_headroom"] = json!(h);
    }
    let (action, summary, explanation, developer_fix) = if new_max > max {
        params["max_replicas"] = json!(new_max);
        (
            ActionKind::RaiseMaxReplicas,
            format!(
                "{target}: autoscaler at maxReplicas {max} with latency {first} → {last} ms; raise it to {new_max}"
            ),
            format!(
                "{situation}. Raising maxReplicas to {new_max} ({}× the bound, at most \
                 diagnoser.rules.max_replicas_limit {}, {headroom}) lets it add pods.",
                settings.max_replicas_factor, settings.max_replicas_limit
            ),
            None,
        )
    } else {
        (
            ActionKind::AdviseCapacity,
            format!(
                "{target}: autoscaler at maxReplicas {max} with latency {first} → {last} ms and no room to raise it ({headroom})"
            ),
            format!(
                "{situation}. It cannot be raised: {headroom}, diagnoser.rules.max_replicas_limit \
                 {}. The capacity is the developer's call.",
                settings.max_replicas_limit
            ),
            Some(format!(
                "{target} needs more than {max} replicas: raise the namespace's pods ResourceQuota \
                 (it admits {headroom}) and then spec.predictor.maxReplicas, or lower the per-pod \
                 load (batching, a smaller model)"
            )),
        )
    };
    Some(Finding {
        root_cause: RootCause::AutoscalerSaturated,
        confidence: 0.8,
        target: Some(target.to_owned()),
        summary,
        explanation,
        actions: vec![proposal(
            action,
            target,
            params,
            ev,
            format!("{running} replicas at maxReplicas {max}, latency {first} → {last} ms"),
        )],
        developer_fix,
        evidence: Vec::new(),
        query: "autoscaler maxReplicas saturated latency rising scale out quota".into(),
    })
}
