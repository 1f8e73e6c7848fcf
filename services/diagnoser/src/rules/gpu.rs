//! The GPU scheduling rule: predictor pods stay Pending because no node has the GPUs they
//! request (kube-scheduler's `Insufficient nvidia.com/gpu`). Nothing in the namespace can be
//! scaled down safely without knowing which models matter more, so the developer gets advice:
//! the namespace's GPU use, per InferenceService, and the candidates to scale down.

use serde_json::json;

use opsmesh_proto::{ActionKind, RootCause, telemetry::ModelHealth};

use super::{Finding, proposal};

/// The scheduler's marker for a GPU shortage.
const INSUFFICIENT_GPU: &str = "Insufficient nvidia.com/gpu";

/// `m` is the pending InferenceService, `namespace_models` every InferenceService of its
/// namespace (itself included) as the collector last saw it.
pub(super) fn gpu_unschedulable(
    target: &str,
    m: &ModelHealth,
    namespace_models: &[ModelHealth],
    ev: &[&str],
) -> Option<Finding> {
    let message = m.unschedulable.as_deref()?;
    if !message.contains(INSUFFICIENT_GPU) {
        return None;
    }
    let held = |o: &ModelHealth| o.ready_replicas * o.gpus_per_replica.unwrap_or(0);
    let in_use: u32 = namespace_models.iter().map(held).sum();
    // Others holding GPUs with more than one ready replica: one can go without taking the
    // model down. Largest holders first.
    let mut candidates: Vec<&ModelHealth> = namespace_models
        .iter()
        .filter(|o| o.name != m.name && held(o) > 0 && o.ready_replicas > 1)
        .collect();
    candidates.sort_by_key(|o| std::cmp::Reverse(held(o)));
    let usage: Vec<String> = namespace_models
        .iter()
        .filter(|o| held(o) > 0)
        .map(|o| {
            format!(
                "{} {} GPUs ({} ready × {})",
                o.name,
                held(o),
                o.ready_replicas,
                o.gpus_per_replica.unwrap_or(0)
            )
        })
        .collect();
    let candidate_text: Vec<String> = candidates
        .iter()
        .map(|o| {
            format!(
                "{} ({} → {} replicas frees {} GPUs)",
                o.name,
                o.ready_replicas,
                o.ready_replicas - 1,
                o.gpus_per_replica.unwrap_or(0)
            )
        })
        .collect();
    let pending = m.replicas.saturating_sub(m.ready_replicas);
    let ns = &m.namespace;
    let fix = format!(
        "{target} waits for {} GPUs ({pending} pending replicas × {}): no node has them ({message}). \
         Namespace {ns} holds {in_use} GPUs: {}. {} Or add GPU nodes, or lower {}'s replicas.",
        pending * m.gpus_per_replica.unwrap_or(1),
        m.gpus_per_replica.unwrap_or(1),
        if usage.is_empty() {
            "none".into()
        } else {
            usage.join(", ")
        },
        if candidate_text.is_empty() {
            "No other InferenceService in the namespace can give one up without going down.".into()
        } else {
            format!("Candidates to scale down: {}.", candidate_text.join(", "))
        },
        m.name,
    );
    Some(Finding {
        root_cause: RootCause::GpuUnschedulable,
        confidence: 0.85,
        target: Some(target.to_owned()),
        summary: format!(
            "{target}: {pending} predictor pods Pending, {INSUFFICIENT_GPU}; namespace {ns} holds {in_use} GPUs"
        ),
        explanation: format!(
            "kube-scheduler cannot place {pending} predictor pods of {target}: \"{message}\" ({}). \
             Scaling other models down is the team's call, so opsmesh advises: {fix}",
            ev.join(", ")
        ),
        actions: vec![proposal(
            ActionKind::AdviseCapacity,
            target,
            json!({
                "pending_replicas": pending,
                "gpus_per_replica": m.gpus_per_replica,
                "namespace_gpus_in_use": in_use,
                "scale_down_candidates": candidates.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
            }),
            ev,
            format!("{pending} pods unschedulable for lack of GPUs"),
        )],
        developer_fix: Some(fix),
        evidence: Vec::new(),
        query: "pending unschedulable FailedScheduling Insufficient nvidia.com/gpu scale down"
            .into(),
    })
}
