use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use opsmesh_proto::Severity;
use opsmesh_runtime::{
    ConfigError, Validate,
    secret::{Secret, SecretSource, trimmed},
};

use super::template::{self, EventKind};

/// `[reporter.notify]`: Slack and PagerDuty. Off unless a route is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Base URL of the console, for links (`https://opsmesh.example.com`).
    pub console_url: Option<String>,
    /// Per request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per notification and route (network errors, timeouts, 429, 5xx); 4xx is not
    /// retried. Unset: as many as `retry_budget` allows.
    pub max_attempts: Option<u32>,
    /// First retry delay, doubling per attempt with jitter; a `Retry-After` is honoured.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Longest all attempts of one notification may take together before it is
    /// dead-lettered. Deliveries run outside the consumer's handler, so this is not bounded
    /// by `bus.consumer.handler_timeout`: make it outlast a typical Slack/PagerDuty outage.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// How long a decision waits for its diagnosis to reach the timeline (developer fix,
    /// severity, namespace) before it is notified without it.
    #[serde(with = "humantime_serde")]
    pub diagnosis_wait: Duration,
    pub templates: Templates,
    pub slack: BTreeMap<String, SlackRoute>,
    pub pagerduty: BTreeMap<String, PagerDutyRoute>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            console_url: None,
            timeout: Duration::from_secs(10),
            max_attempts: None,
            retry_backoff: Duration::from_millis(500),
            retry_backoff_max: Duration::from_secs(30),
            retry_budget: Duration::from_secs(600),
            diagnosis_wait: Duration::from_secs(5),
            templates: Templates::default(),
            slack: BTreeMap::new(),
            pagerduty: BTreeMap::new(),
        }
    }
}

/// `[reporter.notify.templates]`: message text per event; `{placeholder}`s are listed in
/// [`template::PLACEHOLDERS`]. Slack posts it as `text`; PagerDuty uses its first line as the
/// summary and the whole text in `custom_details.message`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Templates {
    pub escalated: String,
    pub awaiting_approval: String,
    pub verification_failed: String,
    pub advised: String,
    pub resolved: String,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            escalated: ":rotating_light: [{cluster}] incident {incident_id} escalated: {root_cause} on {target} ({severity})\n{summary}\nWhy: {reason}\n{console_link}".into(),
            awaiting_approval: ":raised_hand: [{cluster}] incident {incident_id} awaits approval: {action}\n{summary}\nWhy: {reason}\n{console_link}".into(),
            verification_failed: ":x: [{cluster}] incident {incident_id}: verification failed after {action}: {verification}\n{reason}\n{console_link}".into(),
            advised: ":memo: [{cluster}] incident {incident_id}: developer fix for {root_cause} on {target}\n{summary}\n```\n{developer_fix}\n```\n{console_link}".into(),
            resolved: ":white_check_mark: [{cluster}] incident {incident_id} resolved: {reason}\n{console_link}".into(),
        }
    }
}

impl Templates {
    pub fn get(&self, event: EventKind) -> &str {
        match event {
            EventKind::Escalated => &self.escalated,
            EventKind::AwaitingApproval => &self.awaiting_approval,
            EventKind::VerificationFailed => &self.verification_failed,
            EventKind::Advised => &self.advised,
            EventKind::Resolved => &self.resolved,
        }
    }
}

/// Which notifications a route takes. Empty lists match everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFilter {
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Namespace names or globs (`ml-*`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Incidents whose highest alert severity is below this are skipped (unknown passes).
    #[serde(default)]
    pub min_severity: Option<Severity>,
    #[serde(default)]
    pub events: Vec<EventKind>,
}

/// `[reporter.notify.slack.<name>]`: an incoming webhook. The URL is a secret: give it in a
/// file or an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackRoute {
    pub webhook_url_file: Option<PathBuf>,
    pub webhook_url_env: Option<String>,
    #[serde(default, rename = "match")]
    pub filter: RouteFilter,
}

/// `[reporter.notify.pagerduty.<name>]`: Events API v2 (an integration's routing key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyRoute {
    pub routing_key_file: Option<PathBuf>,
    pub routing_key_env: Option<String>,
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    #[serde(default, rename = "match")]
    pub filter: RouteFilter,
}

pub fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

/// Loads a route's secret from `<key>_file` (re-read when it changes) or `<key>_env`,
/// trimmed.
pub fn route_secret(
    file: Option<&Path>,
    env: Option<&str>,
    key: &str,
) -> Result<Secret<String>, ConfigError> {
    Secret::load(key, &SecretSource::from_fields(None, file, env), trimmed)?.ok_or_else(|| {
        ConfigError::invalid(format!("{key}_file"), format!("required (or {key}_env)"))
    })
}

impl Validate for NotifyConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, problem: &str| ConfigError::invalid(format!("{prefix}.{key}"), problem);
        if let Some(url) = &self.console_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("console_url", "must be an http(s) URL"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be > 0"));
        }
        if self.max_attempts == Some(0) {
            return Err(invalid("max_attempts", "must be at least 1"));
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > self.retry_backoff_max {
            return Err(invalid(
                "retry_backoff",
                "must be > 0 and not exceed retry_backoff_max",
            ));
        }
        if self.retry_budget < self.timeout {
            return Err(invalid("retry_budget", "must be at least timeout"));
        }
        for event in EventKind::ALL {
            template::check(self.templates.get(*event)).map_err(|p| {
                ConfigError::invalid(format!("{prefix}.templates.{}", event.name()), p)
            })?;
        }
        for (name, route) in &self.slack {
            let key = format!("{prefix}.slack.{name}.webhook_url");
            let url = route_secret(
                route.webhook_url_file.as_deref(),
                route.webhook_url_env.as_deref(),
                &key,
            )?
            .get();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::invalid(key, "must be an http(s) URL"));
            }
        }
        for (name, route) in &self.pagerduty {
            route_secret(
                route.routing_key_file.as_deref(),
                route.routing_key_env.as_deref(),
                &format!("{prefix}.pagerduty.{name}.routing_key"),
            )?;
            if !(route.url.starts_with("https://") || route.url.starts_with("http://")) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.pagerduty.{name}.url"),
                    "must be an http(s) URL",
                ));
            }
        }
        Ok(())
    }
}
