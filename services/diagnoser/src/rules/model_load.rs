//! The model-load rule: the storage initializer cannot fetch the model (a bad `storageUri`),
//! so readiness never comes. A restart loads from the same URI and cannot help; going back to
//! the previous revision's URI can. Without one, humans decide.

use serde_json::json;

use opsmesh_proto::{ActionKind, RootCause, telemetry::ModelHealth};

use super::{Finding, proposal};

pub(super) fn model_load_failure(
    target: &str,
    m: &ModelHealth,
    failure: &str,
    ev: &[&str],
) -> Finding {
    let current = m.storage_uri.as_deref().unwrap_or("unknown");
    let (actions, summary) = match &m.previous_storage_uri {
        Some(previous) => (
            vec![proposal(
                ActionKind::RollbackStorageUri,
                target,
                json!({"storage_uri": previous, "failing_storage_uri": m.storage_uri}),
                ev,
                format!("{previous} is the storage URI of the previous revision"),
            )],
            format!("{target} cannot load its model from {current}; roll back to {previous}"),
        ),
        None => (
            vec![proposal(
                ActionKind::Escalate,
                target,
                json!({"failing_storage_uri": m.storage_uri}),
                ev,
                "no earlier revision loaded from another storage URI".into(),
            )],
            format!(
                "{target} cannot load its model from {current} and no previous storage URI is known; escalate"
            ),
        ),
    };
    Finding {
        root_cause: RootCause::ModelLoadFailure,
        confidence: 0.9,
        target: Some(target.to_owned()),
        summary,
        explanation: format!(
            "The model never loads: {failure:?} ({}), so readiness never comes ({}/{} replicas \
             ready). A restart downloads from the same URI and cannot help.",
            ev.join(", "),
            m.ready_replicas,
            m.replicas
        ),
        actions,
        developer_fix: None,
        evidence: Vec::new(),
        query: "model load failure storageUri storage initializer roll back previous revision"
            .into(),
    }
}
