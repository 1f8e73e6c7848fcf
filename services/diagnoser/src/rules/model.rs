//! Rules for an InferenceService: image pull errors, OOM kills (a raised memory limit), crash
//! loops, or a healthy model; from telemetry, or from the alert's own fields without it.

use serde_json::json;

use opsmesh_proto::{
    ActionKind, RootCause,
    alert::Alert,
    quantity::{format_bytes, parse_bytes},
    telemetry::ModelHealth,
};

use super::{
    EvidenceLog, Finding, RuleSettings, autoscale::autoscaler_rule, canary::canary_rule,
    gpu::gpu_unschedulable, isvc_target, model_load::model_load_failure, none_finding, proposal,
    reference::missing_reference, row_value,
};
use crate::telemetry::TelemetryStore;

pub(super) fn model_rule(
    alert: &Alert,
    alert_ev: &str,
    namespace: &str,
    name: &str,
    store: &TelemetryStore,
    settings: &RuleSettings,
    log: &mut EvidenceLog,
) -> Option<Finding> {
    let target = isvc_target(namespace, name);
    let (latest, oldest) = match store.model(namespace, name) {
        Some(pair) => pair,
        None => return model_rule_from_alert(alert, alert_ev, &target, settings),
    };
    let ev = log.telemetry(&latest);
    let m = &latest.record;
    let oom = m.oom_killed > 0 || m.last_termination_reason.as_deref() == Some("OOMKilled");
    let waiting = m.waiting_reason.as_deref().unwrap_or("");
    if matches!(waiting, "ImagePullBackOff" | "ErrImagePull") {
        return Some(image_pull(&target, m, &[alert_ev, &ev]));
    }
    if let Some(failure) = &m.load_failure {
        return Some(model_load_failure(&target, m, failure, &[alert_ev, &ev]));
    }
    if let Some(missing) = &m.missing_reference {
        return Some(missing_reference(
            &target,
            namespace,
            missing,
            &[alert_ev, &ev],
        ));
    }
    let namespace_models: Vec<ModelHealth> = store
        .models_in(namespace)
        .into_iter()
        .map(|(latest, _)| latest.record)
        .collect();
    if let Some(f) = gpu_unschedulable(&target, m, &namespace_models, &[alert_ev, &ev]) {
        return Some(f);
    }
    if oom {
        return Some(oom_finding(&target, m, settings, &[alert_ev, &ev]));
    }
    if waiting == "CrashLoopBackOff" {
        return Some(crash_loop(&target, m, &[alert_ev, &ev]));
    }
    if let Some(f) = canary_rule(alert, &target, m, settings, &[alert_ev, &ev]) {
        return Some(f);
    }
    if let Some(f) = autoscaler_rule(alert, &target, m, settings, &[alert_ev, &ev]) {
        return Some(f);
    }
    let restarted = m.restarts > oldest.record.restarts;
    if m.ready && m.ready_replicas >= m.replicas && !restarted {
        return Some(none_finding(
            &target,
            format!(
                "{name} is Ready with {}/{} replicas and no restarts in the window",
                m.ready_replicas, m.replicas
            ),
            &[alert_ev, &ev],
        ));
    }
    None
}

/// Without telemetry, the alert's own fields may still name the failure (lower confidence).
fn model_rule_from_alert(
    alert: &Alert,
    alert_ev: &str,
    target: &str,
    settings: &RuleSettings,
) -> Option<Finding> {
    let reason = row_value(
        alert,
        &["reason", "waiting_reason", "last_termination_reason"],
    )?;
    let m = ModelHealth {
        waiting_reason: Some(reason.to_owned()),
        last_termination_reason: Some(reason.to_owned()),
        // A search that reports the limit lets the OOM rule raise from it.
        memory_limit: row_value(alert, &["memory_limit"]).map(str::to_owned),
        ..ModelHealth::default()
    };
    let mut finding = match reason {
        "ImagePullBackOff" | "ErrImagePull" => image_pull(target, &m, &[alert_ev]),
        "OOMKilled" => oom_finding(target, &m, settings, &[alert_ev]),
        "CrashLoopBackOff" => crash_loop(target, &m, &[alert_ev]),
        _ => return None,
    };
    finding.confidence *= 0.6;
    Some(finding)
}

/// Bytes rounded up to a multiple of `step_mib` MiB, in the largest exact unit (`640Mi`, `1Gi`).
pub(super) fn round_up_mib(bytes: u64, step_mib: u64) -> String {
    let step = step_mib.max(1) << 20;
    format_bytes(bytes.div_ceil(step) * step)
}

fn oom_finding(target: &str, m: &ModelHealth, settings: &RuleSettings, ev: &[&str]) -> Finding {
    let limit = m.memory_limit.as_deref().and_then(|q| parse_bytes(q).ok());
    let ceiling = parse_bytes(&settings.max_memory_limit).unwrap_or(u64::MAX);
    let from_limit = |limit: u64| (limit as f64 * settings.memory_factor_without_peak) as u64;
    let (basis, wanted) = match (m.peak_working_set_bytes, limit) {
        // Killed at the limit means the demand is above it, and a container killed at its
        // limit reports usage near the limit, never its demand: the peak is the basis only
        // when it says more than the limit does (sampled under a higher limit).
        (Some(peak), Some(limit))
            if (peak as f64 * settings.memory_headroom) as u64 <= from_limit(limit) =>
        {
            (
                format!(
                    "peak working set {} × {} is not above the current limit × {}: current limit × {}",
                    round_up_mib(peak, 1),
                    settings.memory_headroom,
                    settings.memory_factor_without_peak,
                    settings.memory_factor_without_peak
                ),
                from_limit(limit),
            )
        }
        (Some(peak), _) => (
            format!(
                "peak working set {} × {}",
                round_up_mib(peak, 1),
                settings.memory_headroom
            ),
            (peak as f64 * settings.memory_headroom) as u64,
        ),
        (None, Some(limit)) => (
            format!(
                "no peak observed: current limit × {}",
                settings.memory_factor_without_peak
            ),
            from_limit(limit),
        ),
        // The remediator checks the limit it observes before patching and refuses a lower one.
        (None, None) => ("no limit or peak known: 1Gi".into(), 1 << 30),
    };
    let capped = wanted.min(ceiling);
    let new_limit = round_up_mib(capped, settings.memory_step_mib);
    if let Some(limit) = limit
        && parse_bytes(&new_limit).ok().is_none_or(|new| new <= limit)
    {
        return oom_at_ceiling(target, m, settings, ev);
    }
    let mut explanation = format!(
        "{target} pods were OOMKilled ({} termination(s), {} restart(s)) under a {} limit ({}). \
         New limit {new_limit} = {basis}, rounded up to {} Mi.",
        m.oom_killed,
        m.restarts,
        m.memory_limit.as_deref().unwrap_or("unknown"),
        ev.join(", "),
        settings.memory_step_mib
    );
    let mut actions = vec![proposal(
        ActionKind::PatchMemoryLimit,
        target,
        json!({"memory_limit": new_limit, "previous_memory_limit": m.memory_limit}),
        ev,
        format!("{basis}, rounded up"),
    )];
    if capped < wanted {
        explanation.push_str(&format!(
            " Capped at {}: below the demand, so humans are told too.",
            settings.max_memory_limit
        ));
        actions.push(proposal(
            ActionKind::Escalate,
            target,
            json!({}),
            ev,
            "the safe limit is below the demand".into(),
        ));
    }
    Finding {
        root_cause: RootCause::OomKilled,
        confidence: if m.peak_working_set_bytes.is_some() {
            0.95
        } else {
            0.8
        },
        target: Some(target.to_owned()),
        summary: format!("{target} is OOMKilled; raise its memory limit to {new_limit}"),
        explanation,
        actions,
        developer_fix: None,
        evidence: Vec::new(),
        query: "OOMKilled memory limit raise working set".into(),
    }
}

/// The limit cannot be raised: it is already at or above what the rules may set (the ceiling,
/// or a factor that does not raise it). Patching would lower it; humans decide.
fn oom_at_ceiling(target: &str, m: &ModelHealth, settings: &RuleSettings, ev: &[&str]) -> Finding {
    let limit = m.memory_limit.as_deref().unwrap_or("unknown");
    Finding {
        root_cause: RootCause::OomKilled,
        confidence: 0.8,
        target: Some(target.to_owned()),
        summary: format!(
            "{target} is OOMKilled at its {limit} limit, which the rules cannot raise (ceiling {}); escalate",
            settings.max_memory_limit
        ),
        explanation: format!(
            "{target} pods were OOMKilled ({} termination(s), {} restart(s)) under a {limit} limit ({}). \
             The limit is already at or above the {} ceiling the rules may set, so no patch would raise it; \
             memory demand above the ceiling needs a human.",
            m.oom_killed,
            m.restarts,
            ev.join(", "),
            settings.max_memory_limit
        ),
        actions: vec![proposal(
            ActionKind::Escalate,
            target,
            json!({}),
            ev,
            "the memory limit is at or above the ceiling; no higher limit may be set".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: "escalate memory demand above the ceiling OOMKilled".into(),
    }
}

fn crash_loop(target: &str, m: &ModelHealth, ev: &[&str]) -> Finding {
    Finding {
        root_cause: RootCause::CrashLoop,
        confidence: 0.8,
        target: Some(target.to_owned()),
        summary: format!("{target} is in CrashLoopBackOff; restart it once"),
        explanation: format!(
            "Containers exit on start (CrashLoopBackOff, {} restarts; {}), not for memory. A single \
             rollout restart clears transient causes; if the loop persists after verification the \
             incident is escalated.",
            m.restarts,
            ev.join(", ")
        ),
        actions: vec![proposal(
            ActionKind::RestartInferenceService,
            target,
            json!({}),
            ev,
            "restart once".into(),
        )],
        developer_fix: None,
        evidence: Vec::new(),
        query: "CrashLoopBackOff restart crash loop".into(),
    }
}

fn image_pull(target: &str, m: &ModelHealth, ev: &[&str]) -> Finding {
    let (actions, summary) = match &m.last_known_good_image {
        Some(good) => (
            vec![proposal(
                ActionKind::RollbackImage,
                target,
                json!({"image": good, "failing_image": m.image}),
                ev,
                format!("{good} is the last image known to run"),
            )],
            format!("{target} cannot pull its image; roll back to {good}"),
        ),
        None => (
            vec![proposal(
                ActionKind::Escalate,
                target,
                json!({}),
                ev,
                "no last known good image".into(),
            )],
            format!("{target} cannot pull its image and no good image is known; escalate"),
        ),
    };
    Finding {
        root_cause: RootCause::ImagePullError,
        confidence: 0.9,
        target: Some(target.to_owned()),
        summary,
        explanation: format!(
            "The predictor waits in {} for image {} ({}). A restart cannot help.",
            m.waiting_reason.as_deref().unwrap_or("ImagePullBackOff"),
            m.image.as_deref().unwrap_or("unknown"),
            ev.join(", ")
        ),
        actions,
        developer_fix: None,
        evidence: Vec::new(),
        query: "ImagePullBackOff image pull rollback previous image".into(),
    }
}
