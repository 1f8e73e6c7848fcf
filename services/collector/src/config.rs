//! `[collector]` configuration.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use opsmesh_runtime::{
    ConfigError, Validate,
    secret::{InlineSecret, SecretSource},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// How often every source is read.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Bound on one source's read; a slower source reports an error for the interval.
    #[serde(with = "humantime_serde")]
    pub source_timeout: Duration,
    /// kubeconfig file; unset: in-cluster service account, then `KUBECONFIG` /
    /// `~/.kube/config` (and without any, the Kubernetes sources are off).
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: the current context).
    pub context: Option<String>,
    /// Namespaces to read; empty reads all. A list, or comma-separated
    /// (`OPSMESH__COLLECTOR__NAMESPACES=ml-team-a,ml-team-b`).
    #[serde(deserialize_with = "opsmesh_runtime::config::name_list")]
    pub namespaces: Vec<String>,
    /// What the collector's Kubernetes credentials may read: `cluster` (a ClusterRole) or
    /// `namespaces` (a Role per listed namespace: deploy/k8s/components/collector-namespaced).
    /// Bound to namespaces it skips the cluster-scoped reads (namespace budget annotations,
    /// ClusterPolicyReports, Kyverno ClusterPolicies) instead of failing on them every interval.
    pub scope: Scope,
    /// Warning events and container terminations (`OOMKilled`, …) younger than this are
    /// reported with a model; an older `lastState` is history, not evidence.
    #[serde(with = "humantime_serde")]
    pub event_window: Duration,
    /// Hourly budget in USD per namespace, when the namespace has no
    /// `opsmesh.dev/hourly-budget-usd` annotation.
    pub budgets: BTreeMap<String, f64>,
    /// Budget of namespaces with neither annotation nor entry in `budgets`.
    pub default_hourly_budget_usd: Option<f64>,
    pub sources: SourceSwitches,
    pub opencost: OpenCostConfig,
    pub argocd: ArgoCdConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            source_timeout: Duration::from_secs(10),
            kubeconfig: None,
            context: None,
            namespaces: Vec::new(),
            scope: Scope::Cluster,
            event_window: Duration::from_secs(15 * 60),
            budgets: BTreeMap::new(),
            default_hourly_budget_usd: None,
            sources: SourceSwitches::default(),
            opencost: OpenCostConfig::default(),
            argocd: ArgoCdConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Cluster,
    Namespaces,
}

/// Turns sources off (each is on when what it reads is configured).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSwitches {
    pub models: bool,
    pub policies: bool,
    pub costs: bool,
    pub gitops: bool,
}

impl Default for SourceSwitches {
    fn default() -> Self {
        Self {
            models: true,
            policies: true,
            costs: true,
            gitops: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenCostConfig {
    /// Base URL of the OpenCost API (e.g. `http://opencost.opencost:9003`); unset: no costs.
    pub url: Option<String>,
    /// Allocation window; costs are reported per hour over it (`10m`, `1h`, `1d`).
    pub window: String,
    /// How far back each workload's usual size is read from OpenCost's allocation history
    /// (the size a cost remediation scales back to), in sets of `history_step`.
    pub history: String,
    pub history_step: String,
    /// How often that history is read again; between reads the workloads' usual sizes are
    /// reused (they move slowly, and a day of sets per step is a heavy query).
    #[serde(with = "humantime_serde")]
    pub history_refresh: Duration,
    /// How long usual sizes from the last successful read stay in use while reads fail;
    /// older, the costs are reported without them rather than with a stale size.
    #[serde(with = "humantime_serde")]
    pub history_max_age: Duration,
}

impl Default for OpenCostConfig {
    fn default() -> Self {
        Self {
            url: None,
            window: "1h".into(),
            history: "24h".into(),
            history_step: "1h".into(),
            history_refresh: Duration::from_secs(15 * 60),
            history_max_age: Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArgoCdConfig {
    /// Base URL of the ArgoCD API server (e.g. `https://argocd.example.com`); unset: no GitOps.
    pub url: Option<String>,
    /// API token. Prefer `token_file` (a mounted Secret, re-read when it changes) or
    /// `OPSMESH__COLLECTOR__ARGOCD__TOKEN`.
    pub token: Option<InlineSecret>,
    pub token_file: Option<PathBuf>,
}

impl ArgoCdConfig {
    /// `token` or `token_file`.
    pub fn token_source(&self) -> SecretSource {
        SecretSource::from_fields(self.token.as_ref(), self.token_file.as_deref(), None)
    }
}

/// `10m`, `1h`, `2d` as hours.
pub fn window_hours(window: &str) -> Option<f64> {
    let (n, unit) = window.split_at(window.find(|c: char| !c.is_ascii_digit())?);
    let n: f64 = n.parse().ok().filter(|n: &f64| *n > 0.0)?;
    match unit {
        "m" => Some(n / 60.0),
        "h" => Some(n),
        "d" => Some(n * 24.0),
        _ => None,
    }
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(value).map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(key, "must be an http or https URL"));
    }
    Ok(())
}

impl Validate for CollectorConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                key("interval"),
                "must be at least 100ms",
            ));
        }
        if self.source_timeout.is_zero() {
            return Err(ConfigError::invalid(
                key("source_timeout"),
                "must be longer than 0s",
            ));
        }
        if let Some(bad) = self
            .namespaces
            .iter()
            .find(|n| !opsmesh_proto::name::is_dns_label(n))
        {
            return Err(ConfigError::invalid(
                key("namespaces"),
                format!("{bad:?} is not a namespace name (a DNS label)"),
            ));
        }
        if self.scope == Scope::Namespaces && self.namespaces.is_empty() {
            return Err(ConfigError::invalid(
                key("namespaces"),
                "required when collector.scope = \"namespaces\" (the namespaces its Roles grant)",
            ));
        }
        if let Some(path) = &self.kubeconfig
            && !path.is_file()
        {
            return Err(ConfigError::invalid(
                key("kubeconfig"),
                format!("no such file: {}", path.display()),
            ));
        }
        for (ns, budget) in &self.budgets {
            if !budget.is_finite() || *budget < 0.0 {
                return Err(ConfigError::invalid(
                    key(&format!("budgets.{ns}")),
                    "must be a non-negative number",
                ));
            }
        }
        if let Some(b) = self.default_hourly_budget_usd
            && (!b.is_finite() || b < 0.0)
        {
            return Err(ConfigError::invalid(
                key("default_hourly_budget_usd"),
                "must be a non-negative number",
            ));
        }
        if let Some(u) = &self.opencost.url {
            check_url(&key("opencost.url"), u)?;
        }
        let windows = [
            ("opencost.window", &self.opencost.window),
            ("opencost.history", &self.opencost.history),
            ("opencost.history_step", &self.opencost.history_step),
        ];
        for (name, window) in windows {
            if window_hours(window).is_none() {
                return Err(ConfigError::invalid(
                    key(name),
                    "must be a window like 10m, 1h or 1d",
                ));
            }
        }
        if window_hours(&self.opencost.history_step) > window_hours(&self.opencost.history) {
            return Err(ConfigError::invalid(
                key("opencost.history_step"),
                "must not be longer than opencost.history",
            ));
        }
        if self.opencost.history_refresh.is_zero() {
            return Err(ConfigError::invalid(
                key("opencost.history_refresh"),
                "must be longer than 0s",
            ));
        }
        if self.opencost.history_max_age < self.opencost.history_refresh {
            return Err(ConfigError::invalid(
                key("opencost.history_max_age"),
                "must not be shorter than opencost.history_refresh",
            ));
        }
        if let Some(u) = &self.argocd.url {
            check_url(&key("argocd.url"), u)?;
            match self.argocd.token_source().given() {
                0 => {
                    return Err(ConfigError::invalid(
                        key("argocd.token"),
                        "required with argocd.url (or argocd.token_file)",
                    ));
                }
                1 => {}
                _ => {
                    return Err(ConfigError::invalid(
                        key("argocd.token_file"),
                        "set token or token_file, not both",
                    ));
                }
            }
            if let Some(f) = self.argocd.token_file.as_ref().filter(|f| !f.is_file()) {
                return Err(ConfigError::invalid(
                    key("argocd.token_file"),
                    format!("no such file: {}", f.display()),
                ));
            }
        }
        Ok(())
    }
}
