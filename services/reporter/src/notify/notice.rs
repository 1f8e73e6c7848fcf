//! What a decision notifies, to whom (route filters), and the Slack and PagerDuty bodies.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use opsmesh_proto::{
    Envelope, IncidentState, Severity, diagnosis::Diagnosis, remediation::Remediation,
};

use super::{EventKind, RouteFilter};
use crate::timeline::IncidentSummary;

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

pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
        out.push('…');
        out
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
