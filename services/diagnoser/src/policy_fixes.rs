//! What each common Kyverno policy asks of a workload, and the exact YAML that satisfies it.

pub struct Fix {
    pub title: String,
    pub explanation: String,
    pub yaml: String,
}

/// The fix for `policy`; unknown policies get the policy's own message.
pub fn fix_for(policy: &str, message: Option<&str>) -> Fix {
    let (title, explanation, yaml) = match policy {
        "disallow-root-containers" | "require-run-as-nonroot" => (
            "run as a non-root user",
            "The policy refuses containers that may run as root. Set runAsNonRoot and a non-zero \
             runAsUser in the predictor's security context (the image must support it).",
            "spec:\n  predictor:\n    securityContext:\n      runAsNonRoot: true\n      runAsUser: 1000\n    containers:\n      - name: kserve-container\n        securityContext:\n          runAsNonRoot: true\n          allowPrivilegeEscalation: false\n",
        ),
        "require-requests-limits" => (
            "declare CPU and memory requests and limits",
            "The policy refuses containers without resource requests and limits, which the \
             scheduler and quotas need.",
            "spec:\n  predictor:\n    containers:\n      - name: kserve-container\n        resources:\n          requests:\n            cpu: \"1\"\n            memory: 2Gi\n          limits:\n            cpu: \"2\"\n            memory: 4Gi\n",
        ),
        "disallow-latest-tag" => (
            "pin the image to a version",
            "The policy refuses the mutable `:latest` tag (or no tag): a rollout must name the \
             exact image so it can be reproduced and rolled back.",
            "spec:\n  predictor:\n    containers:\n      - name: kserve-container\n        image: registry.example.com/team/model:1.4.2   # a version tag or @sha256 digest, never :latest\n",
        ),
        "disallow-privileged-containers" => (
            "drop privileged mode",
            "The policy refuses privileged containers, which have full access to the node.",
            "spec:\n  predictor:\n    containers:\n      - name: kserve-container\n        securityContext:\n          privileged: false\n          allowPrivilegeEscalation: false\n          capabilities:\n            drop: [\"ALL\"]\n",
        ),
        "require-probes" | "require-pod-probes" => (
            "add readiness and liveness probes",
            "The policy refuses containers without probes, without which traffic reaches a model \
             that is not loaded and hung servers are never restarted.",
            "spec:\n  predictor:\n    containers:\n      - name: kserve-container\n        readinessProbe:\n          httpGet:\n            path: /v2/health/ready\n            port: 8080\n          initialDelaySeconds: 10\n          periodSeconds: 10\n        livenessProbe:\n          httpGet:\n            path: /v2/health/live\n            port: 8080\n          initialDelaySeconds: 30\n          periodSeconds: 20\n",
        ),
        _ => {
            let message = message.unwrap_or("no message was reported");
            return Fix {
                title: format!("satisfy policy {policy}"),
                explanation: format!("Kyverno policy {policy} says: {message}"),
                yaml: format!(
                    "# Kyverno policy {policy}: {message}\n# Change the workload so the policy's rule passes; `kubectl get clusterpolicy {policy} -o yaml` shows it.\n"
                ),
            };
        }
    };
    Fix {
        title: title.into(),
        explanation: format!(
            "{explanation}{}",
            message
                .map(|m| format!(" Kyverno reported: {m}."))
                .unwrap_or_default()
        ),
        yaml: yaml.into(),
    }
}
