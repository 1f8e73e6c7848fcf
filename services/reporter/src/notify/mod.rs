//! Slack (incoming webhooks) and PagerDuty (Events API v2) notifications for remediator
//! decisions: trigger on escalated, awaiting approval, failed verification and advised (with
//! the developer fix from the diagnosis); resolve on resolved. PagerDuty's `dedup_key` is the
//! incident id, so a re-sent trigger updates the same alert and `resolve` closes it.
//!
//! Notifications come from a consumer group shared by the replicas
//! (`<group_prefix>reporter-notify`, `opsmesh.remediations.v1`), so each decision is notified
//! by one replica. Each route retries network errors, 429 (honouring `Retry-After`) and 5xx
//! with backoff within `retry_budget`; other 4xx are not retried (the payload or the route is
//! wrong) and are counted. Off unless a route is configured.

mod config;
mod template;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use prometheus::{IntCounterVec, Opts};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    Envelope, IncidentState, Severity, diagnosis::Diagnosis, remediation::Remediation, topics,
};
use opsmesh_runtime::{
    BoxError, ConfigError, Context, Handler, HandlerError, Received, metrics::register,
};

pub use config::{NotifyConfig, PagerDutyRoute, RouteFilter, SlackRoute, Templates};
pub use template::EventKind;

use crate::timeline::{IncidentStore, IncidentSummary};

/// Consumer group (after `bus.group_prefix`) shared by every replica.
pub const GROUP: &str = "reporter-notify";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Slack,
    PagerDuty,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::PagerDuty => "pagerduty",
        }
    }
}

struct Route {
    name: String,
    channel: Channel,
    /// Webhook URL (Slack) or Events API URL (PagerDuty).
    url: String,
    /// PagerDuty routing key.
    routing_key: Option<String>,
    filter: RouteFilter,
}

/// What a notification is about, gathered from the decision, its diagnosis and the timeline.
#[derive(Debug, Clone)]
pub struct Notice {
    pub event: EventKind,
    pub incident_id: String,
    pub cluster: String,
    pub namespace: Option<String>,
    pub severity: Option<Severity>,
    pub values: BTreeMap<&'static str, String>,
    pub console_url: Option<String>,
}

pub struct Notifier {
    config: NotifyConfig,
    routes: Vec<Route>,
    client: reqwest::Client,
    store: Arc<IncidentStore>,
    sent: IntCounterVec,
}

/// The event a decision notifies, if any.
pub fn event_of(record: &Remediation) -> Option<EventKind> {
    if record.verification.as_ref().is_some_and(|v| !v.healthy) {
        return Some(EventKind::VerificationFailed);
    }
    match record.state {
        IncidentState::Escalated => Some(EventKind::Escalated),
        IncidentState::AwaitingApproval => Some(EventKind::AwaitingApproval),
        IncidentState::Advised => Some(EventKind::Advised),
        IncidentState::Resolved => Some(EventKind::Resolved),
        _ => None,
    }
}

fn namespace_of(target: &str) -> Option<String> {
    let parts: Vec<&str> = target.split('/').collect();
    match parts.as_slice() {
        [_, ns, _] => Some((*ns).to_owned()),
        ["namespace", ns] => Some((*ns).to_owned()),
        _ => None,
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.len() >= head.len() + tail.len()
                && text.starts_with(head)
                && (tail.contains('*') && glob(tail, &text[head.len()..])
                    || !tail.contains('*') && text.ends_with(tail))
        }
    }
}

impl RouteFilter {
    pub fn matches(&self, notice: &Notice) -> bool {
        (self.events.is_empty() || self.events.contains(&notice.event))
            && (self.clusters.is_empty() || self.clusters.contains(&notice.cluster))
            && (self.namespaces.is_empty()
                || notice
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| self.namespaces.iter().any(|p| glob(p, ns))))
            && match (self.min_severity, notice.severity) {
                (Some(min), Some(severity)) => severity >= min,
                _ => true,
            }
    }
}

impl Notice {
    /// Builds the notice for `record` (of `envelope`) with what the timeline knows.
    pub fn new(
        event: EventKind,
        envelope: &Envelope<Remediation>,
        diagnosis: Option<&Diagnosis>,
        incident: Option<&IncidentSummary>,
        console_url: Option<&str>,
    ) -> Self {
        let record = &envelope.payload;
        let incident_id = envelope.incident_id.clone().unwrap_or_default();
        let target = diagnosis
            .and_then(|d| d.target.clone())
            .or_else(|| incident.and_then(|i| i.target.clone()))
            .or_else(|| record.action.as_ref().map(|a| a.target.clone()))
            .unwrap_or_default();
        let namespace = namespace_of(&target);
        let severity = incident.and_then(|i| i.severity);
        let link = console_url.map(|base| {
            format!(
                "{}/console/incidents/{}",
                base.trim_end_matches('/'),
                crate::console::url_encode(&incident_id)
            )
        });
        let mut values = BTreeMap::new();
        values.insert("event", event.name().to_owned());
        values.insert("incident_id", incident_id.clone());
        values.insert("cluster", envelope.cluster.clone());
        values.insert("namespace", namespace.clone().unwrap_or_default());
        values.insert("target", target);
        values.insert(
            "severity",
            severity
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
        );
        values.insert("state", record.state.to_string());
        values.insert(
            "root_cause",
            diagnosis
                .map(|d| d.root_cause.to_string())
                .or_else(|| incident.and_then(|i| i.root_cause.map(|c| c.to_string())))
                .unwrap_or_else(|| "unknown".into()),
        );
        values.insert(
            "summary",
            diagnosis
                .map(|d| d.summary.clone())
                .or_else(|| incident.and_then(|i| i.summary.clone()))
                .unwrap_or_default(),
        );
        values.insert("reason", record.reason.clone());
        values.insert(
            "action",
            record
                .action
                .as_ref()
                .map(|a| format!("{} {}", a.kind, a.target))
                .unwrap_or_else(|| "no action".into()),
        );
        values.insert(
            "verification",
            record
                .verification
                .as_ref()
                .map(|v| {
                    format!(
                        "{} after {} attempts: {}",
                        if v.healthy { "healthy" } else { "unhealthy" },
                        v.attempts,
                        v.detail
                    )
                })
                .unwrap_or_default(),
        );
        values.insert(
            "developer_fix",
            diagnosis
                .and_then(|d| d.developer_fix.clone())
                .unwrap_or_else(|| "(no developer fix in the diagnosis)".into()),
        );
        values.insert("console_link", link.clone().unwrap_or_default());
        Self {
            event,
            incident_id,
            cluster: envelope.cluster.clone(),
            namespace,
            severity,
            values,
            console_url: link,
        }
    }

    fn pagerduty_severity(&self) -> &'static str {
        match self.severity {
            Some(Severity::Critical) => "critical",
            Some(Severity::High) => "error",
            Some(Severity::Medium | Severity::Low) => "warning",
            Some(Severity::Info) => "info",
            None => match self.event {
                EventKind::Escalated | EventKind::VerificationFailed => "error",
                _ => "warning",
            },
        }
    }
}

/// Slack incoming-webhook body.
pub fn slack_payload(text: &str) -> Value {
    json!({
        "text": text,
        "unfurl_links": false,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, 3000)}}],
    })
}

/// PagerDuty Events API v2 body.
pub fn pagerduty_payload(notice: &Notice, routing_key: &str, text: &str) -> Value {
    if notice.event == EventKind::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": notice.incident_id,
        });
    }
    let summary = text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text);
    let mut details = serde_json::Map::new();
    for (k, v) in &notice.values {
        if !v.is_empty() {
            details.insert((*k).to_owned(), Value::String(v.clone()));
        }
    }
    details.insert("message".into(), Value::String(text.to_owned()));
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": notice.incident_id,
        "client": "opsmesh",
        "payload": {
            "summary": truncate(summary, 1024),
            "source": notice.values.get("target").filter(|t| !t.is_empty()).unwrap_or(&notice.cluster),
            "severity": notice.pagerduty_severity(),
            "component": notice.values.get("target"),
            "group": notice.namespace,
            "class": notice.values.get("root_cause"),
            "custom_details": details,
        },
    });
    if let Some(link) = &notice.console_url {
        body["client_url"] = json!(link);
        body["links"] = json!([{"href": link, "text": "opsmesh console"}]);
    }
    body
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Outcome of delivering to one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent {
        attempts: u32,
    },
    /// A 4xx other than 429: not retried.
    Rejected {
        status: u16,
        body: String,
    },
    /// Attempts or budget exhausted on retryable failures.
    GaveUp {
        attempts: u32,
        last: String,
    },
}

impl Notifier {
    /// `None` when no route is configured.
    pub fn new(
        ctx: &Context,
        config: &NotifyConfig,
        store: Arc<IncidentStore>,
    ) -> Result<Option<Self>, ConfigError> {
        if config.slack.is_empty() && config.pagerduty.is_empty() {
            return Ok(None);
        }
        let mut routes = Vec::new();
        for (name, route) in &config.slack {
            routes.push(Route {
                name: name.clone(),
                channel: Channel::Slack,
                url: config::read_secret(
                    route.webhook_url_file.as_ref(),
                    route.webhook_url_env.as_deref(),
                    &format!("reporter.notify.slack.{name}.webhook_url"),
                )?,
                routing_key: None,
                filter: route.filter.clone(),
            });
        }
        for (name, route) in &config.pagerduty {
            routes.push(Route {
                name: name.clone(),
                channel: Channel::PagerDuty,
                url: route.url.clone(),
                routing_key: Some(config::read_secret(
                    route.routing_key_file.as_ref(),
                    route.routing_key_env.as_deref(),
                    &format!("reporter.notify.pagerduty.{name}.routing_key"),
                )?),
                filter: route.filter.clone(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("opsmesh-reporter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::invalid("reporter.notify", e.to_string()))?;
        let sent = register(
            &ctx.registry,
            IntCounterVec::new(
                Opts::new(
                    "reporter_notifications_total",
                    "Notifications by channel, route, event and outcome (sent, rejected, gave_up, filtered)",
                ),
                &["channel", "route", "event", "outcome"],
            )
            .expect("valid metric"),
        );
        Ok(Some(Self {
            config: config.clone(),
            routes,
            client,
            store,
            sent,
        }))
    }

    pub async fn run(
        self: &Arc<Self>,
        ctx: &Context,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        tracing::info!(
            routes = ?self.routes.iter().map(|r| format!("{}:{}", r.channel.name(), r.name)).collect::<Vec<_>>(),
            "notifications on"
        );
        ctx.consume(
            GROUP,
            &[topics::REMEDIATIONS],
            Arc::new(NotifyHandler(self.clone())),
            shutdown,
        )
        .await?;
        Ok(())
    }

    /// Notifies every matching route of `envelope` (a remediator decision).
    pub async fn notify(&self, envelope: &Envelope<Remediation>) -> Vec<(String, Delivery)> {
        let Some(event) = event_of(&envelope.payload) else {
            return Vec::new();
        };
        let (diagnosis, incident) = self.context_of(envelope).await;
        let notice = Notice::new(
            event,
            envelope,
            diagnosis.as_ref().map(|d| &d.payload),
            incident.as_ref(),
            self.config.console_url.as_deref(),
        );
        let text = template::render(self.config.templates.get(event), &notice.values);
        let deliveries = self.routes.iter().map(|route| {
            let notice = &notice;
            let text = &text;
            async move {
                if !route.filter.matches(notice) {
                    self.count(route, event, "filtered");
                    return None;
                }
                let body = match route.channel {
                    Channel::Slack => slack_payload(text),
                    Channel::PagerDuty => pagerduty_payload(
                        notice,
                        route.routing_key.as_deref().unwrap_or_default(),
                        text,
                    ),
                };
                let outcome = self.deliver(route, &body).await;
                let label = match &outcome {
                    Delivery::Sent { .. } => "sent",
                    Delivery::Rejected { .. } => "rejected",
                    Delivery::GaveUp { .. } => "gave_up",
                };
                self.count(route, event, label);
                match &outcome {
                    Delivery::Sent { attempts } => tracing::info!(
                        route = %route.name, channel = route.channel.name(), event = event.name(),
                        incident = %notice.incident_id, attempts, "notified"
                    ),
                    other => tracing::error!(
                        route = %route.name, channel = route.channel.name(), event = event.name(),
                        incident = %notice.incident_id, outcome = ?other, "notification failed"
                    ),
                }
                Some((format!("{}:{}", route.channel.name(), route.name), outcome))
            }
        });
        futures::future::join_all(deliveries)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn count(&self, route: &Route, event: EventKind, outcome: &str) {
        self.sent
            .with_label_values(&[route.channel.name(), &route.name, event.name(), outcome])
            .inc();
    }

    /// The decision's diagnosis and incident from the timeline, waiting a little for the
    /// timeline consumer to catch up (it reads the same topics in another group).
    async fn context_of(
        &self,
        envelope: &Envelope<Remediation>,
    ) -> (Option<Envelope<Diagnosis>>, Option<IncidentSummary>) {
        let deadline = Instant::now() + self.config.diagnosis_wait;
        loop {
            if let Some((diagnosis, incident)) = self.store.diagnosis(envelope.payload.diagnosis_id)
            {
                return (Some(diagnosis), Some(incident));
            }
            if Instant::now() >= deadline {
                let incident = envelope
                    .incident_id
                    .as_deref()
                    .and_then(|id| self.store.summary(id));
                tracing::warn!(
                    diagnosis = %envelope.payload.diagnosis_id,
                    "diagnosis not in the timeline yet; notifying without it"
                );
                return (None, incident);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn deliver(&self, route: &Route, body: &Value) -> Delivery {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (retry_after, last) = match self.client.post(&route.url).json(body).send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    let text = truncate(&text, 300);
                    if status.is_success() {
                        return Delivery::Sent { attempts: attempt };
                    }
                    if status.is_client_error() && status.as_u16() != 429 {
                        return Delivery::Rejected {
                            status: status.as_u16(),
                            body: text,
                        };
                    }
                    (retry_after, format!("{status}: {text}"))
                }
                Err(err) => (None, format!("network: {err}")),
            };
            if attempt >= self.config.max_attempts {
                return Delivery::GaveUp {
                    attempts: attempt,
                    last,
                };
            }
            let exp = self
                .config
                .retry_backoff
                .saturating_mul(2u32.saturating_pow(attempt - 1));
            let backoff = exp
                .min(self.config.retry_backoff_max)
                .mul_f64(0.5 + rand::random::<f64>() / 2.0);
            let delay = retry_after.map_or(backoff, |ra| ra.max(backoff));
            if started.elapsed() + delay > self.config.retry_budget {
                return Delivery::GaveUp {
                    attempts: attempt,
                    last: format!("{last} (next retry in {delay:?} exceeds retry_budget)"),
                };
            }
            tracing::warn!(route = %route.name, attempt, ?delay, error = %last, "notification retry");
            tokio::time::sleep(delay).await;
        }
    }
}

struct NotifyHandler(Arc<Notifier>);

#[async_trait]
impl Handler for NotifyHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        // Not an envelope: the HEC writer dead-letters it; nothing to notify.
        let Ok(envelope) = Envelope::<Remediation>::from_slice(&message.payload) else {
            return Ok(());
        };
        self.0.notify(&envelope).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_namespaces() {
        assert!(glob("ml-*", "ml-team-a"));
        assert!(glob("*-prod", "ml-prod"));
        assert!(glob("ml-*-a", "ml-team-a"));
        assert!(!glob("ml-*", "web"));
        assert_eq!(
            namespace_of("inferenceservice/ml-team-a/gpt").as_deref(),
            Some("ml-team-a")
        );
        assert_eq!(namespace_of("namespace/ml-c").as_deref(), Some("ml-c"));
    }
}
