//! The topic table: who writes, who reads, how it is keyed and kept.

pub const ALERTS: &str = "opsmesh.alerts.v1";
pub const TELEMETRY: &str = "opsmesh.telemetry.v1";
pub const DIAGNOSES: &str = "opsmesh.diagnoses.v1";
pub const REMEDIATIONS: &str = "opsmesh.remediations.v1";
pub const APPROVALS: &str = "opsmesh.approvals.v1";
pub const INCIDENTS: &str = "opsmesh.incidents.v1";
pub const LEDGER_HEADS: &str = "opsmesh.ledger-heads.v1";
pub const NOTIFICATIONS: &str = "opsmesh.notifications.v1";
pub const INVESTIGATIONS: &str = "opsmesh.investigations.v1";
pub const INVESTIGATION_REQUESTS: &str = "opsmesh.investigation-requests.v1";

/// Suffix of every topic's dead-letter queue.
pub const DLQ_SUFFIX: &str = ".dlq";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub producer: &'static str,
    pub consumers: &'static [&'static str],
    pub key: &'static str,
    /// Default partition count (configurable at provisioning).
    pub partitions: i32,
    pub retention_ms: i64,
    pub cleanup_policy: &'static str,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

pub const TOPICS: &[TopicSpec] = &[
    TopicSpec {
        name: ALERTS,
        producer: "alert-receiver",
        consumers: &["diagnoser", "reporter"],
        key: "incident id (alert fingerprint)",
        partitions: 6,
        retention_ms: 7 * DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: TELEMETRY,
        producer: "collector",
        consumers: &["diagnoser", "reporter"],
        key: "resource (`inferenceservice/<ns>/<name>`, `cost/<ns>`, …)",
        partitions: 6,
        retention_ms: DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: DIAGNOSES,
        producer: "diagnoser",
        consumers: &["remediator", "reporter"],
        key: "incident id",
        partitions: 6,
        retention_ms: 7 * DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: REMEDIATIONS,
        producer: "remediator",
        consumers: &["reporter", "remediator (ledger replay)"],
        key: "incident id",
        partitions: 6,
        retention_ms: 30 * DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: LEDGER_HEADS,
        producer: "remediator (signed chain heads, every `ledger.heads_interval`)",
        consumers: &["`opsmesh audit verify` (truncation check)"],
        key: "remediator instance",
        partitions: 1,
        retention_ms: 30 * DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: APPROVALS,
        producer: "reporter (console, MCP)",
        consumers: &["remediator", "reporter"],
        key: "incident id",
        partitions: 6,
        retention_ms: 7 * DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: INVESTIGATION_REQUESTS,
        producer: "diagnoser (unsure diagnoses), `opsmesh investigate`, reporter (console, MCP)",
        consumers: &["diagnoser (the investigator)", "reporter (queued)"],
        key: "investigation id",
        partitions: 6,
        retention_ms: 7 * DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: INVESTIGATIONS,
        producer: "diagnoser (the investigator: running, each step, then the report)",
        consumers: &["reporter", "remediator (proposals of incident reports)"],
        key: "incident id, else investigation id",
        partitions: 6,
        retention_ms: 7 * DAY_MS,
        cleanup_policy: "delete",
    },
    TopicSpec {
        name: INCIDENTS,
        producer: "diagnoser",
        consumers: &["diagnoser (state rebuild)"],
        key: "alert fingerprint",
        partitions: 6,
        retention_ms: 30 * DAY_MS,
        cleanup_policy: "compact",
    },
];

/// Topics one service keeps to itself: provisioned like the others, but their payload type
/// is that service's own (the reporter's notification record), not a contract between
/// services, so proto has no schema or golden example for them.
pub const SERVICE_TOPICS: &[TopicSpec] = &[TopicSpec {
    name: NOTIFICATIONS,
    producer: "reporter notify (a notification dead-lettered for one route, to the DLQ); `opsmesh dlq replay`",
    consumers: &["reporter notify (resends to that one route)"],
    key: "incident id",
    partitions: 6,
    retention_ms: 7 * DAY_MS,
    cleanup_policy: "delete",
}];

/// Every topic, contract and service-owned, in table order.
fn every_topic() -> impl Iterator<Item = &'static TopicSpec> {
    TOPICS.iter().chain(SERVICE_TOPICS)
}

/// Every topic plus its DLQ, as provisioned.
pub fn all_topic_names() -> Vec<String> {
    every_topic()
        .flat_map(|t| [t.name.to_owned(), dlq(t.name)])
        .collect()
}

pub fn dlq(topic: &str) -> String {
    format!("{topic}{DLQ_SUFFIX}")
}

/// Retention of every DLQ: dead letters wait for an operator to notice and replay them, so
/// they are kept at least as long as the longest-kept topic, and never compacted (that would
/// keep only the last dead letter of each key).
pub const DLQ_RETENTION_MS: i64 = 30 * DAY_MS;

/// Kafka topic settings a topic is provisioned with and checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub cleanup_policy: &'static str,
}

impl TopicConfig {
    /// `(Kafka config name, value)` of each setting.
    pub fn entries(&self) -> [(&'static str, String); 2] {
        [
            ("retention.ms", self.retention_ms.to_string()),
            ("cleanup.policy", self.cleanup_policy.to_owned()),
        ]
    }
}

/// The settings `name` is provisioned with: its row of the table, or for a DLQ `delete` and
/// [`DLQ_RETENTION_MS`] (or its topic's, if longer). `None` for a topic not in the table.
pub fn config_of(name: &str) -> Option<TopicConfig> {
    let (base, is_dlq) = match name.strip_suffix(DLQ_SUFFIX) {
        Some(base) => (base, true),
        None => (name, false),
    };
    let spec = every_topic().find(|t| t.name == base)?;
    Some(if is_dlq {
        TopicConfig {
            retention_ms: spec.retention_ms.max(DLQ_RETENTION_MS),
            cleanup_policy: "delete",
        }
    } else {
        TopicConfig {
            retention_ms: spec.retention_ms,
            cleanup_policy: spec.cleanup_policy,
        }
    })
}

/// The topic table as Markdown (README and `proto/TOPICS.md`, checked for drift).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| topic | producer | consumers | key | partitions | retention | DLQ |\n|---|---|---|---|---|---|---|\n",
    );
    for t in every_topic() {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} d ({}) | `{}` |\n",
            t.name,
            t.producer,
            t.consumers.join(", "),
            t.key,
            t.partitions,
            t.retention_ms / DAY_MS,
            t.cleanup_policy,
            dlq(t.name),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_includes_the_service_topics_and_their_dlqs() {
        let names = all_topic_names();
        for topic in [NOTIFICATIONS.to_owned(), dlq(NOTIFICATIONS), dlq(ALERTS)] {
            assert!(names.contains(&topic), "{topic} missing from {names:?}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a topic is listed twice");
        assert!(markdown_table().contains(&format!("| `{NOTIFICATIONS}` |")));
    }

    #[test]
    fn every_provisioned_topic_has_its_declared_settings() {
        for name in all_topic_names() {
            assert!(config_of(&name).is_some(), "{name}");
        }
        let incidents = config_of(INCIDENTS).unwrap();
        assert_eq!(incidents.cleanup_policy, "compact");
        assert_eq!(incidents.retention_ms, 30 * DAY_MS);
        let incidents_dlq = config_of(&dlq(INCIDENTS)).unwrap();
        assert_eq!(
            incidents_dlq.cleanup_policy, "delete",
            "a DLQ is never compacted"
        );
        assert_eq!(
            config_of(&dlq(TELEMETRY)).unwrap().retention_ms,
            30 * DAY_MS
        );
        assert_eq!(config_of("opsmesh.unknown.v1"), None);
        assert_eq!(config_of("x.dlq"), None);
    }
}
