//! Kyverno: cluster policies, their reports and PolicyViolation events.

use std::time::Duration;

use serde_json::json;

use opsmesh_proto::Target;

use crate::{
    resources,
    scenario::{Fault, PolicyAction},
    world::World,
};

use super::{event, event_name, kserve::template_of, rule_name};

impl World {
    pub(crate) fn add_policy(&mut self, name: &str, action: PolicyAction) {
        self.policies.insert(name.to_owned(), action);
        let rule = rule_name(name);
        let failure_action = match action {
            PolicyAction::Enforce => "Enforce",
            PolicyAction::Audit => "Audit",
        };
        self.put(
            &resources::CLUSTER_POLICIES,
            "",
            name,
            json!({
                "metadata": {"annotations": {"policies.kyverno.io/category": "Pod Security Standards (Restricted)", "policies.kyverno.io/severity": "medium"}},
                "spec": {
                    "validationFailureAction": failure_action,
                    "background": true,
                    "rules": [{"name": rule, "match": {"any": [{"resources": {"kinds": ["Pod"]}}]}, "validate": {"message": format!("{name}: validation failed")}}],
                },
                "status": {"ready": true, "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}]},
            }),
        );
    }

    pub(super) fn reconcile_policy_reports(&mut self, now: Duration) {
        for f in self.faults.clone() {
            let (
                Fault::PolicyDenial {
                    policy,
                    resource,
                    reason,
                },
                Some(Target::InferenceService { namespace, name }),
            ) = (&f.fault, &f.target)
            else {
                continue;
            };
            if !f.applied {
                continue;
            }
            let Some(isvc) = self
                .get_obj(&resources::INFERENCE_SERVICES, namespace, name)
                .cloned()
            else {
                continue;
            };
            let t = template_of(&isvc);
            let satisfied = t.satisfies(policy);
            let action = self
                .policies
                .get(policy)
                .copied()
                .unwrap_or(PolicyAction::Enforce);
            let rule = rule_name(policy);
            let uid = isvc["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            let mut result = json!({
                "policy": policy,
                "rule": rule,
                "result": if satisfied { "pass" } else { "fail" },
                "message": if satisfied { format!("validation rule '{rule}' passed.") } else { format!("validation error: {reason}. rule {rule} failed") },
                "severity": "medium",
                "category": "Pod Security Standards (Restricted)",
                "source": "kyverno",
                "scored": true,
                "timestamp": {"seconds": self.clock.at(now).timestamp(), "nanos": 0},
                "properties": {"validationFailureAction": match action { PolicyAction::Enforce => "Enforce", PolicyAction::Audit => "Audit" }},
            });
            if let Some(r) = resource {
                let (kind, rname) = r.split_once('/').unwrap_or(("Pod", r));
                result["resources"] = json!([{"apiVersion": "v1", "kind": kind, "name": rname, "namespace": namespace}]);
            }
            let report = json!({
                "metadata": {"labels": {"app.kubernetes.io/managed-by": "kyverno"}},
                "scope": {"apiVersion": resources::INFERENCE_SERVICES.api_version(), "kind": "InferenceService", "name": name, "namespace": namespace, "uid": uid},
                "results": [result],
                "summary": {"pass": u32::from(satisfied), "fail": u32::from(!satisfied), "warn": 0, "error": 0, "skip": 0},
            });
            let report_name = if uid.is_empty() {
                format!("isvc-{name}")
            } else {
                uid
            };
            self.put(&resources::POLICY_REPORTS, namespace, &report_name, report);
            if action == PolicyAction::Audit && !satisfied {
                let ev = event(
                    namespace,
                    json!({"apiVersion": resources::INFERENCE_SERVICES.api_version(), "kind": "InferenceService", "name": name, "namespace": namespace}),
                    "PolicyViolation",
                    format!("policy {policy}/{rule} fail: {reason}"),
                    "Warning",
                    1,
                    self.ts(f.at),
                    self.ts(f.at),
                    "kyverno-scan",
                );
                self.put(
                    &resources::EVENTS,
                    namespace,
                    &event_name(name, "PolicyViolation"),
                    ev,
                );
            }
        }
    }
}
