//! Scheduling evidence: the GPUs one predictor pod requests and why the scheduler cannot place
//! one (`PodScheduled=False`, reason `Unschedulable`).

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use opsmesh_proto::telemetry::ModelHealth;

const GPU: &str = "nvidia.com/gpu";

/// `resources` is the model container's `resources`; `pods` the predictor's pods.
pub fn observe(health: &mut ModelHealth, resources: &Value, pods: &[&Pod]) {
    health.gpus_per_replica = [&resources["limits"][GPU], &resources["requests"][GPU]]
        .into_iter()
        .find_map(|q| match q {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        })
        .filter(|n| *n > 0);
    health.unschedulable = pods.iter().find_map(|p| {
        p.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })?
            .message
            .clone()
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unschedulable_pod_and_its_gpu_request_are_read() {
        let message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.";
        let pending: Pod = serde_json::from_value(json!({
            "metadata": {"name": "llm-predictor-1"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message},
            ]},
        }))
        .unwrap();
        let running: Pod = serde_json::from_value(json!({"status": {"phase": "Running"}})).unwrap();
        let mut h = ModelHealth::default();
        observe(
            &mut h,
            &json!({"limits": {"nvidia.com/gpu": "1"}}),
            &[&running, &pending],
        );
        assert_eq!(h.gpus_per_replica, Some(1));
        assert_eq!(h.unschedulable.as_deref(), Some(message));
    }
}
