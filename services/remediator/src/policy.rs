//! The policy (`[remediator.policy]`) a cluster-changing action must pass: namespaces,
//! concurrency, cooldown and rate limits, and the mode it may run in. It is checked when the
//! action is planned and again just before it runs (an approval can come an hour later, when
//! other incidents have acted, the limits changed or the target moved), against the values
//! observed in the cluster at that moment.

use chrono::{DateTime, Utc};
use serde_json::Value;

use opsmesh_proto::{ActionKind, Target, remediation::ActionMode};

use crate::config::PolicyConfig;

/// The code of a refusal because every action slot is taken: not a verdict on the action,
/// so the incident waits for a slot (up to `policy.queue_timeout`) before it is refused.
pub const SLOT_REFUSAL: &str = "max_concurrent_actions";

/// The param [`Cluster::observe`](crate::cluster::Cluster::observe) records for an ArgoCD
/// application: every namespace it deploys to (destination and managed resources).
pub const OBSERVED_NAMESPACES: &str = "observed_namespaces";

/// What the policy needs to know about actions already taken (from the ledger).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Incidents executing or verifying now (other than this one).
    pub in_flight: usize,
    /// Cluster-changing actions of other incidents within the rate-limit window: when and on
    /// which target.
    pub recent: Vec<(DateTime<Utc>, String)>,
    /// This incident's own earlier cluster-changing actions (a ladder's earlier steps): they
    /// count against the rate limits, never against the cooldown, which is between incidents.
    pub own: Vec<(DateTime<Utc>, String)>,
}

/// Why the policy refused an action: a stable code (metrics label) and the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PolicyRefusal {
    pub code: &'static str,
    pub reason: String,
}

impl PolicyRefusal {
    fn new(code: &'static str, reason: String) -> Self {
        Self { code, reason }
    }
}

fn duration(d: std::time::Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// Whether actions may touch namespace `ns`: not denied, and in the allow-list when there is
/// one.
pub fn namespace_allowed(ns: &str, policy: &PolicyConfig) -> Result<(), PolicyRefusal> {
    if policy.denied_namespaces.iter().any(|d| d == ns) {
        return Err(PolicyRefusal::new(
            "namespace_denied",
            format!("namespace {ns} is denied by policy"),
        ));
    }
    if !policy.allowed_namespaces.is_empty() && !policy.allowed_namespaces.iter().any(|a| a == ns) {
        return Err(PolicyRefusal::new(
            "namespace_not_allowed",
            format!(
                "namespace {ns} is not in the allow-list ({})",
                policy.allowed_namespaces.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The namespace the policy checks a target against: a workload's own, or the one an ArgoCD
/// application target names (a hint from the diagnosis; the namespaces the application
/// really deploys to are checked before it runs, see [`execution_namespaces`]).
fn policy_namespace(target: &Target) -> Option<&str> {
    match target {
        Target::Application { namespace, .. } => namespace.as_deref(),
        other => other.namespace(),
    }
}

/// The namespaces an action about to run must be allowed in, from what the cluster showed:
/// for an ArgoCD application every namespace it deploys to. An application whose namespaces
/// were not observed fails closed.
fn execution_namespaces(
    kind: ActionKind,
    params: &std::collections::BTreeMap<String, Value>,
) -> Result<Vec<&str>, PolicyRefusal> {
    if kind != ActionKind::ArgocdSync {
        return Ok(Vec::new());
    }
    let namespaces: Vec<&str> = params
        .get(OBSERVED_NAMESPACES)
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if namespaces.is_empty() {
        return Err(PolicyRefusal::new(
            "namespace_unknown",
            "the application's destination namespace could not be read from ArgoCD, so the namespace policy cannot be checked".into(),
        ));
    }
    Ok(namespaces)
}

/// The policy for a cluster-changing action on `target_name` (`target` parsed), given what
/// other incidents are doing (`history`) at `now`.
pub fn allows(
    target_name: &str,
    target: &Target,
    policy: &PolicyConfig,
    history: &History,
    now: DateTime<Utc>,
) -> Result<(), PolicyRefusal> {
    if let Some(ns) = policy_namespace(target) {
        namespace_allowed(ns, policy)?;
    }
    if history.in_flight >= policy.max_concurrent_actions {
        return Err(PolicyRefusal::new(
            SLOT_REFUSAL,
            format!(
                "{} incidents are already executing or verifying (limit {})",
                history.in_flight, policy.max_concurrent_actions
            ),
        ));
    }
    let cooldown = chrono::Duration::from_std(policy.cooldown).unwrap_or(chrono::Duration::MAX);
    if let Some((at, _)) = history
        .recent
        .iter()
        .filter(|(_, t)| t == target_name)
        .max_by_key(|(at, _)| *at)
        && now - *at < cooldown
    {
        return Err(PolicyRefusal::new(
            "cooldown",
            format!(
                "{target_name} was acted on at {} by another incident; cooldown {}",
                at.to_rfc3339(),
                duration(policy.cooldown)
            ),
        ));
    }
    let window =
        chrono::Duration::from_std(policy.rate_limit.window).unwrap_or(chrono::Duration::MAX);
    let recent: Vec<&(DateTime<Utc>, String)> = history
        .recent
        .iter()
        .chain(&history.own)
        .filter(|(at, _)| now - *at < window)
        .collect();
    if recent.len() >= policy.rate_limit.global as usize {
        return Err(PolicyRefusal::new(
            "rate_limit",
            format!(
                "{} cluster-changing actions in the last {} (global limit {})",
                recent.len(),
                duration(policy.rate_limit.window),
                policy.rate_limit.global
            ),
        ));
    }
    if let Some(ns) = target.namespace() {
        let in_ns = recent
            .iter()
            .filter(|(_, t)| {
                t.parse::<Target>()
                    .ok()
                    .and_then(|t| t.namespace().map(str::to_owned))
                    .as_deref()
                    == Some(ns)
            })
            .count();
        if in_ns >= policy.rate_limit.per_namespace as usize {
            return Err(PolicyRefusal::new(
                "rate_limit_namespace",
                format!(
                    "{in_ns} cluster-changing actions in namespace {ns} in the last {} (limit {})",
                    duration(policy.rate_limit.window),
                    policy.rate_limit.per_namespace
                ),
            ));
        }
    }
    Ok(())
}

/// The policy again, just before a planned (perhaps long since approved) action runs: the
/// same checks as at planning against the history now, plus every namespace the cluster
/// showed the action reaching (`observed_*` params, merged in by the caller).
pub fn allows_now(
    kind: ActionKind,
    target_name: &str,
    params: &std::collections::BTreeMap<String, Value>,
    policy: &PolicyConfig,
    history: &History,
    now: DateTime<Utc>,
) -> Result<(), PolicyRefusal> {
    let target = target_name
        .parse::<Target>()
        .map_err(|e| PolicyRefusal::new("invalid_target", e.to_string()))?;
    allows(target_name, &target, policy, history, now)?;
    for ns in execution_namespaces(kind, params)? {
        namespace_allowed(ns, policy).map_err(|refusal| PolicyRefusal {
            reason: format!("the application deploys to {ns}: {}", refusal.reason),
            ..refusal
        })?;
    }
    Ok(())
}

/// The mode a cluster-changing action of `kind` runs in, and why it is stricter than
/// configured: `auto` needs an explicit, non-empty `allowed_namespaces`; without one, every
/// cluster-changing action waits for an approval.
pub fn mode_for(kind: ActionKind, policy: &PolicyConfig) -> (ActionMode, Option<String>) {
    let mode = policy.mode_of(kind);
    if mode == ActionMode::Auto && policy.allowed_namespaces.is_empty() {
        return (
            ActionMode::Approve,
            Some(format!(
                "{kind} is configured auto, but policy.allowed_namespaces is empty: auto mode acts only in namespaces listed there, so it needs an approval"
            )),
        );
    }
    (mode, None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn allowing(namespaces: &[&str]) -> PolicyConfig {
        PolicyConfig {
            allowed_namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn auto_without_an_allow_list_needs_an_approval() {
        let kind = ActionKind::PatchMemoryLimit;
        let (mode, why) = mode_for(kind, &PolicyConfig::default());
        assert_eq!(mode, ActionMode::Approve);
        assert!(why.unwrap().contains("policy.allowed_namespaces is empty"));
        assert_eq!(mode_for(kind, &allowing(&["ml"])), (ActionMode::Auto, None));
        let dry = PolicyConfig {
            mode: ActionMode::DryRun,
            ..PolicyConfig::default()
        };
        assert_eq!(mode_for(kind, &dry), (ActionMode::DryRun, None));
    }

    #[test]
    fn an_application_is_checked_against_every_namespace_it_deploys_to() {
        let sync = |namespaces: Value| {
            let params: BTreeMap<String, Value> =
                [(OBSERVED_NAMESPACES.to_owned(), namespaces)].into();
            allows_now(
                ActionKind::ArgocdSync,
                "application/apps",
                &params,
                &allowing(&["ml"]),
                &History::default(),
                Utc::now(),
            )
        };
        assert_eq!(sync(json!(["ml"])), Ok(()));
        let other = sync(json!(["ml", "payments"])).unwrap_err();
        assert_eq!(other.code, "namespace_not_allowed");
        assert!(
            other
                .reason
                .starts_with("the application deploys to payments"),
            "{other}"
        );
        assert_eq!(sync(json!([])).unwrap_err().code, "namespace_unknown");
        let hinted = allows(
            "application/kube-system/apps",
            &"application/kube-system/apps".parse().unwrap(),
            &allowing(&["ml"]),
            &History::default(),
            Utc::now(),
        );
        assert_eq!(hinted.unwrap_err().code, "namespace_denied");
    }
}
