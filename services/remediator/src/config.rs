//! `[remediator]`: where the cluster and ArgoCD are, the policy every action must pass, and
//! how actions are verified and approved.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use opsmesh_proto::{ActionKind, quantity::parse_bytes, remediation::ActionMode};
use opsmesh_runtime::{
    ConfigError, Validate,
    secret::{InlineSecret, SecretSource},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediatorConfig {
    /// kubeconfig file; unset: in-cluster service account, then `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current context).
    pub context: Option<String>,
    /// Field manager of every write (server-side apply and patches).
    pub field_manager: String,
    /// Bound on one Kubernetes or ArgoCD request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Directory of runbooks (`*.md`); unset = the runbooks built into the binary.
    pub runbooks_dir: Option<PathBuf>,
    pub argocd: ArgoCdConfig,
    pub policy: PolicyConfig,
    pub verification: VerificationConfig,
    pub approvals: ApprovalConfig,
    pub ledger: LedgerConfig,
    pub investigations: InvestigationsConfig,
    /// A step that keeps failing transiently (Kubernetes or the bus down) is retried this
    /// long, then the incident is escalated as stuck.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// First retry delay of a failing step; doubles per attempt, with jitter, up to
    /// `retry_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// An incident that is neither terminal nor awaiting approval, with no ledger record for
    /// this long and no work driving it in this replica, is escalated as stuck.
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// Background steps (health checks, resumed actions) run at the same time.
    pub max_parallel_steps: usize,
}

impl Default for RemediatorConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            field_manager: "opsmesh".into(),
            request_timeout: Duration::from_secs(10),
            runbooks_dir: None,
            argocd: ArgoCdConfig::default(),
            policy: PolicyConfig::default(),
            verification: VerificationConfig::default(),
            approvals: ApprovalConfig::default(),
            ledger: LedgerConfig::default(),
            investigations: InvestigationsConfig::default(),
            retry_budget: Duration::from_secs(10 * 60),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(30),
            stuck_after: Duration::from_secs(15 * 60),
            max_parallel_steps: 64,
        }
    }
}

/// `[remediator.investigations]`: the investigator's reports on `opsmesh.investigations.v1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvestigationsConfig {
    /// Plan the proposals of an investigation's report for an incident the rules escalated
    /// with nothing to do (every such action waits for a human); off: reports are not read.
    pub enabled: bool,
}

impl Default for InvestigationsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArgoCdConfig {
    /// ArgoCD API base URL (`https://argocd.example.com`); unset: `argocd_sync` is refused.
    pub url: Option<String>,
    /// Bearer token (prefer `token_file`).
    pub token: Option<InlineSecret>,
    /// File holding the bearer token (a mounted Secret), re-read when it changes.
    pub token_file: Option<PathBuf>,
}

impl ArgoCdConfig {
    /// `token` or `token_file`.
    pub fn token_source(&self) -> SecretSource {
        SecretSource::from_fields(self.token.as_ref(), self.token_file.as_deref(), None)
    }
}

/// `[remediator.policy]`: what may run, where, how often and how much.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Mode of every action kind not listed in `modes`.
    pub mode: ActionMode,
    /// Mode per action kind, e.g. `scale_inference_service = "approve"`.
    pub modes: HashMap<ActionKind, ActionMode>,
    /// Namespaces actions may touch; empty = every namespace not denied, but then no action
    /// runs in `auto` mode: each needs an approval. A list, or comma-separated (environment).
    #[serde(deserialize_with = "opsmesh_runtime::config::name_list")]
    pub allowed_namespaces: Vec<String>,
    /// Namespaces actions never touch (wins over `allowed_namespaces`).
    #[serde(deserialize_with = "opsmesh_runtime::config::name_list")]
    pub denied_namespaces: Vec<String>,
    /// No second action on the same target within this (across incidents).
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    pub rate_limit: RateLimitConfig,
    /// Largest share of an InferenceService's replicas one action may take away (0–1).
    pub max_replica_reduction: f64,
    /// Incidents executing or verifying at the same time, across replicas. More incidents
    /// wait for a free slot (up to `queue_timeout`); they are not refused on the spot.
    pub max_concurrent_actions: usize,
    /// Longest an incident waits for a free action slot before it is refused.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Highest memory limit the remediator will set.
    pub memory_ceiling: String,
    /// Fewest replicas the remediator will scale an InferenceService to.
    pub replica_floor: u32,
    /// Highest `maxReplicas` the remediator will give an InferenceService's autoscaler.
    pub max_replicas_ceiling: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: ActionMode::Auto,
            modes: HashMap::new(),
            allowed_namespaces: Vec::new(),
            denied_namespaces: vec![
                "kube-system".into(),
                "kube-public".into(),
                "kube-node-lease".into(),
            ],
            cooldown: Duration::from_secs(10 * 60),
            rate_limit: RateLimitConfig::default(),
            max_replica_reduction: 0.8,
            max_concurrent_actions: 10,
            queue_timeout: Duration::from_secs(10 * 60),
            memory_ceiling: "16Gi".into(),
            replica_floor: 1,
            max_replicas_ceiling: 20,
        }
    }
}

impl PolicyConfig {
    pub fn mode_of(&self, kind: ActionKind) -> ActionMode {
        self.modes.get(&kind).copied().unwrap_or(self.mode)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Cluster-changing actions per window, all namespaces together.
    pub global: u32,
    /// Cluster-changing actions per window in one namespace.
    pub per_namespace: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            global: 60,
            per_namespace: 15,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationConfig {
    /// Health checks after acting before the result counts as failed.
    pub attempts: u32,
    /// Time before each check.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            attempts: 5,
            interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// A proposal without a decision this long after it was published is escalated.
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
    /// How often expired proposals are looked for.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Public keys (SPKI PEM, several during a rotation) of the reporters whose signed
    /// approvals are believed. Without them every approval is refused: whoever can write to
    /// the approvals topic must not be able to approve.
    pub verify_keys: SecretSource,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            expiry: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(30),
            verify_keys: SecretSource::default(),
        }
    }
}

/// `[remediator.ledger]`: how the audit ledger is signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Ed25519 private key (PKCS#8 PEM) signing every record and the chain heads. Unset:
    /// records are hash-chained but unsigned (a warning at start).
    pub signing_key: SecretSource,
    /// How often the heads of the chains this replica wrote to are published, signed, on
    /// `opsmesh.ledger-heads.v1`: records cut off the end of a chain since the last heads
    /// are the most a truncation can hide.
    #[serde(with = "humantime_serde")]
    pub heads_interval: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            signing_key: SecretSource::default(),
            heads_interval: Duration::from_secs(60),
        }
    }
}

impl Validate for RemediatorConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.field_manager.trim().is_empty() || self.field_manager.len() > 128 {
            return Err(ConfigError::invalid(
                key("field_manager"),
                "must be 1-128 characters",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(key("request_timeout"), "must be > 0"));
        }
        if let Some(path) = &self.kubeconfig
            && !path.is_file()
        {
            return Err(ConfigError::invalid(
                key("kubeconfig"),
                format!("{}: no such file", path.display()),
            ));
        }
        if let Some(url) = &self.argocd.url
            && url::Url::parse(url).is_err()
        {
            return Err(ConfigError::invalid(key("argocd.url"), "must be a URL"));
        }
        let p = &self.policy;
        for (field, list) in [
            ("allowed_namespaces", &p.allowed_namespaces),
            ("denied_namespaces", &p.denied_namespaces),
        ] {
            if let Some(bad) = list.iter().find(|n| !opsmesh_proto::name::is_dns_label(n)) {
                return Err(ConfigError::invalid(
                    key(&format!("policy.{field}")),
                    format!("{bad:?} is not a valid namespace name"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&p.max_replica_reduction) {
            return Err(ConfigError::invalid(
                key("policy.max_replica_reduction"),
                "must be between 0 and 1",
            ));
        }
        if p.max_concurrent_actions == 0 {
            return Err(ConfigError::invalid(
                key("policy.max_concurrent_actions"),
                "must be at least 1",
            ));
        }
        if parse_bytes(&p.memory_ceiling).is_err() {
            return Err(ConfigError::invalid(
                key("policy.memory_ceiling"),
                "must be a Kubernetes quantity such as 16Gi",
            ));
        }
        if p.rate_limit.window.is_zero() {
            return Err(ConfigError::invalid(
                key("policy.rate_limit.window"),
                "must be > 0",
            ));
        }
        if self.verification.attempts == 0 || self.verification.attempts > 100 {
            return Err(ConfigError::invalid(
                key("verification.attempts"),
                "must be between 1 and 100",
            ));
        }
        if self.ledger.heads_interval.is_zero() {
            return Err(ConfigError::invalid(
                key("ledger.heads_interval"),
                "must be > 0",
            ));
        }
        if self.approvals.expiry.is_zero() {
            return Err(ConfigError::invalid(key("approvals.expiry"), "must be > 0"));
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > self.retry_backoff_max {
            return Err(ConfigError::invalid(
                key("retry_backoff"),
                "must be > 0 and not exceed retry_backoff_max",
            ));
        }
        if self.max_parallel_steps == 0 {
            return Err(ConfigError::invalid(
                key("max_parallel_steps"),
                "must be at least 1",
            ));
        }
        // The sweeper must not take an incident from work that is still within its limits.
        let longest_wait = (self.verification.interval * self.verification.attempts)
            .max(self.retry_budget)
            .max(p.queue_timeout);
        if self.stuck_after <= longest_wait {
            return Err(ConfigError::invalid(
                key("stuck_after"),
                format!(
                    "must exceed verification.interval x attempts, retry_budget and policy.queue_timeout ({})",
                    humantime_serde::re::humantime::format_duration(longest_wait)
                ),
            ));
        }
        if self.approvals.sweep_interval.is_zero() {
            return Err(ConfigError::invalid(
                key("approvals.sweep_interval"),
                "must be > 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opsmesh_runtime::ConfigTree;

    use super::*;

    fn policy(env: &[(&str, &str)]) -> Result<PolicyConfig, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let tree = ConfigTree::load_with_env(None, env)?;
        Ok(tree.section::<RemediatorConfig>("remediator")?.policy)
    }

    #[test]
    fn namespace_lists_come_from_the_environment_comma_separated() {
        let p = policy(&[(
            "OPSMESH__REMEDIATOR__POLICY__ALLOWED_NAMESPACES",
            "ml-team-a, ml-team-b",
        )])
        .unwrap();
        assert_eq!(p.allowed_namespaces, ["ml-team-a", "ml-team-b"]);
        let err = policy(&[(
            "OPSMESH__REMEDIATOR__POLICY__DENIED_NAMESPACES",
            "kube-system,Not_A_Namespace",
        )])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("remediator.policy.denied_namespaces"),
            "{err}"
        );
    }
}
