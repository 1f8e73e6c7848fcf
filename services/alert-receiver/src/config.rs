//! `[receiver]` configuration.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use opsmesh_runtime::{ConfigError, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Name recorded as the alert's `source` when the sender does not name one.
    pub source_name: String,
    /// Request body limit in bytes (`413` above it).
    pub max_body_bytes: usize,
    /// JSON nesting limit (`400` above it).
    pub max_depth: usize,
    /// Result rows kept per alert; the rest are dropped and `rows_truncated` is set.
    pub max_rows: usize,
    /// Alerts in one Alertmanager request (`413` above it, nothing published).
    pub max_alerts_per_request: usize,
    /// An entity field that is not a usable Kubernetes name is kept on the alert, quoted,
    /// up to this many characters (the rest is cut and `truncated` set).
    pub max_unusable_value_chars: usize,
    /// How long a request may wait for the bus to acknowledge before answering `503`.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Seconds suggested to senders in `Retry-After` when the bus is unavailable.
    pub retry_after_secs: u64,
    /// Which alert fields name the entity; the first present field wins.
    pub entity_fields: EntityFields,
    /// A signature older or newer than this is refused (`403 expired`), and a signature seen
    /// within it again is refused as a replay.
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// The same delivery (same sid and rows, or same Alertmanager fingerprint, status and
    /// `startsAt`) within this window returns the first alert ids and is published once. Also
    /// the period over which every replica gives a delivery the same alert id.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Deliveries remembered for deduplication; beyond it the oldest is forgotten early
    /// (`receiver_table_evictions_total{table="deliveries"}`).
    pub dedup_capacity: usize,
    /// Signatures remembered for replay detection; beyond it the oldest is forgotten early
    /// (`receiver_table_evictions_total{table="signatures"}`), and could be replayed within
    /// `replay_window`: keep it above the sources' rates × `replay_window`.
    pub replay_capacity: usize,
    /// Failed authentications per peer address (see [`FailedAuthConfig`]).
    pub failed_auth: FailedAuthConfig,
    /// Accept requests without credentials. Only for local experiments: the receiver is the
    /// mesh's public door.
    pub allow_unauthenticated: bool,
    /// How often a secrets file's modification time is looked at for a rotation (a `stat`
    /// on every request otherwise); 0 looks on every request.
    #[serde(with = "humantime_serde")]
    pub secrets_recheck: Duration,
    /// Senders, by name. Secrets come from files or environment variables, never from here.
    pub sources: BTreeMap<String, SourceConfig>,
}

/// One sender (a Splunk deployment, an Alertmanager) and how it proves who it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// File with the HMAC signing secrets, one per line (several during a rotation). Re-read
    /// when it changes, so a mounted Secret rotates without a restart; read empty or
    /// unreadable, the previous secrets stay. With `secrets_env` too, both lists are active.
    pub secrets_file: Option<PathBuf>,
    /// Name of an environment variable holding the signing secrets, comma-separated.
    pub secrets_env: Option<String>,
    /// File with accepted `Authorization: Bearer` tokens, one per line.
    pub bearer_tokens_file: Option<PathBuf>,
    /// Name of an environment variable holding bearer tokens, comma-separated.
    pub bearer_tokens_env: Option<String>,
    /// Enables `POST /v1/alerts/splunk/<source>/<token>` for Splunk's built-in Webhook action,
    /// which cannot send headers. Weaker than signing: the token is in every URL log.
    pub path_token_file: Option<PathBuf>,
    pub path_token_env: Option<String>,
    /// Sustained requests per second accepted from this source (`429` above it; 0 = no limit).
    pub rate_limit_per_second: u32,
    /// Requests allowed in a burst above the sustained rate.
    pub rate_limit_burst: u32,
}

/// A limit that lets an alert storm through (Alertmanager groups, Splunk re-fires) but not
/// a runaway or hostile sender flooding the bus.
impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            secrets_file: None,
            secrets_env: None,
            bearer_tokens_file: None,
            bearer_tokens_env: None,
            path_token_file: None,
            path_token_env: None,
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
        }
    }
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            source_name: "splunk".into(),
            max_body_bytes: 1024 * 1024,
            max_depth: 32,
            max_rows: 10_000,
            publish_timeout: Duration::from_secs(5),
            retry_after_secs: 5,
            entity_fields: EntityFields::default(),
            replay_window: Duration::from_secs(300),
            dedup_window: Duration::from_secs(600),
            dedup_capacity: 100_000,
            replay_capacity: 100_000,
            failed_auth: FailedAuthConfig::default(),
            max_alerts_per_request: 1000,
            max_unusable_value_chars: 256,
            allow_unauthenticated: false,
            secrets_recheck: Duration::from_secs(1),
            sources: BTreeMap::new(),
        }
    }
}

impl Validate for ReceiverConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_depth", self.max_depth),
            ("max_rows", self.max_rows),
            ("max_alerts_per_request", self.max_alerts_per_request),
            ("max_unusable_value_chars", self.max_unusable_value_chars),
            ("dedup_capacity", self.dedup_capacity),
            ("replay_capacity", self.replay_capacity),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if self.publish_timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{prefix}.publish_timeout"),
                "must be > 0",
            ));
        }
        self.failed_auth
            .validate(&format!("{prefix}.failed_auth"))?;
        for (name, source) in &self.sources {
            source.validate(&format!("{prefix}.sources.{name}"))?;
        }
        Ok(())
    }
}

/// A peer address that fails to authenticate `max_failures` times within `window` is
/// answered `429` with `Retry-After` for the rest of that window, whatever it sends — a
/// valid credential too: guessing secrets costs a window per `max_failures` guesses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedAuthConfig {
    /// Failures allowed per peer and window; 0 turns the limit off.
    pub max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Peers tracked at once; beyond it the oldest is forgotten
    /// (`receiver_table_evictions_total{table="failed_auth_peers"}`).
    pub max_peers: usize,
    /// Proxies (the Ingress controller) whose `X-Forwarded-For` names the peer: a request
    /// from one of these addresses is counted against the last address in that header that
    /// is not itself a trusted proxy. Without it every sender behind the Ingress would share
    /// the Ingress's address, and one guesser would lock them all out.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for FailedAuthConfig {
    fn default() -> Self {
        Self {
            max_failures: 20,
            window: Duration::from_secs(60),
            max_peers: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Validate for FailedAuthConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.max_failures > 0 && self.window.is_zero() {
            return Err(ConfigError::invalid(
                format!("{prefix}.window"),
                "must be > 0 when max_failures is set",
            ));
        }
        if self.max_peers == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_peers"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Field names, in priority order, per entity attribute. Defaults cover the names used by the
/// opsmesh detections, KServe, Kubernetes and Alertmanager conventions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityFields {
    pub cluster: Vec<String>,
    pub namespace: Vec<String>,
    pub inference_service: Vec<String>,
    pub pod: Vec<String>,
    pub policy: Vec<String>,
    pub application: Vec<String>,
    pub severity: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Default for EntityFields {
    fn default() -> Self {
        Self {
            cluster: names(&["cluster", "kubernetes_cluster", "k8s_cluster"]),
            namespace: names(&["namespace", "kubernetes_namespace", "k8s_namespace", "ns"]),
            inference_service: names(&[
                "inferenceservice",
                "inference_service",
                "model_name",
                "isvc",
                "model",
            ]),
            pod: names(&["pod", "pod_name", "kubernetes_pod_name"]),
            policy: names(&["policy", "policy_name", "kyverno_policy"]),
            // `name` last: ArgoCD's own metrics label the application `name`.
            application: names(&["application", "argocd_app", "app_name", "name"]),
            severity: names(&["severity", "urgency"]),
        }
    }
}

impl Validate for SourceConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let has_credentials = self.secrets_file.is_some()
            || self.secrets_env.is_some()
            || self.bearer_tokens_file.is_some()
            || self.bearer_tokens_env.is_some()
            || self.path_token_file.is_some()
            || self.path_token_env.is_some();
        if !has_credentials {
            return Err(ConfigError::invalid(
                prefix,
                "needs secrets_file, secrets_env, bearer_tokens_file, bearer_tokens_env, \
                 path_token_file or path_token_env",
            ));
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.rate_limit_burst"),
                "must be at least 1 when rate_limit_per_second is set",
            ));
        }
        Ok(())
    }
}
