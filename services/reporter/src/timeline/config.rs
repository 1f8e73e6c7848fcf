use serde::Deserialize;

use opsmesh_runtime::{ConfigError, Validate};

/// `[reporter.timeline]`: the in-memory incident read model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimelineConfig {
    /// Incidents kept; the least recently updated one is forgotten first.
    pub max_incidents: usize,
    /// Messages kept per incident, all kinds together. Beyond it storm alerts but the first
    /// go first (counted, not kept), then the oldest of the longest other list, each list
    /// keeping its latest; audit records leaving memory are verified into the chain status.
    pub max_events_per_incident: usize,
    /// Ids of messages dropped from an incident remembered, so that redelivering one changes
    /// nothing (an older one would be applied again, and dropped again).
    pub max_dropped_ids_per_incident: usize,
    /// Alert ids remembered with the incident they joined (a diagnosis claiming an alert
    /// moves it; a redelivered alert returns to its incident), most recent first.
    pub max_alert_ids: usize,
    /// Investigations kept per incident (the diagnoser's unsure diagnoses and on-demand
    /// ones); beyond it the oldest finished one is forgotten first.
    pub max_investigations_per_incident: usize,
    /// Investigations of questions (no incident) kept; beyond it the one requested longest
    /// ago is forgotten (`reporter_timeline_evictions_total{table="questions"}`).
    pub max_questions: usize,
    /// Steps kept per investigation until its report (which holds them all) arrives; beyond
    /// it steps are counted, not kept.
    pub max_steps_per_investigation: usize,
    /// Names this replica's consumer group (`<group_prefix>reporter-timeline-<replica_id>`).
    /// Unset: host name, process id and a random suffix, so every start reads the topics'
    /// whole retention again (the model lives in memory).
    pub replica_id: Option<String>,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        Self {
            max_incidents: 1000,
            max_events_per_incident: 500,
            max_dropped_ids_per_incident: 500,
            max_alert_ids: 100_000,
            max_investigations_per_incident: 20,
            max_questions: 1000,
            max_steps_per_investigation: 200,
            replica_id: None,
        }
    }
}

impl Validate for TimelineConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.max_incidents == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_incidents"),
                "must be at least 1",
            ));
        }
        if self.max_events_per_incident < 4 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_events_per_incident"),
                "must be at least 4",
            ));
        }
        if self.max_dropped_ids_per_incident == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_dropped_ids_per_incident"),
                "must be at least 1",
            ));
        }
        if self.max_alert_ids == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_alert_ids"),
                "must be at least 1",
            ));
        }
        for (key, value) in [
            (
                "max_investigations_per_incident",
                self.max_investigations_per_incident,
            ),
            ("max_questions", self.max_questions),
            (
                "max_steps_per_investigation",
                self.max_steps_per_investigation,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(id) = &self.replica_id
            && (id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.replica_id"),
                "must be non-empty ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(())
    }
}

impl TimelineConfig {
    /// The replica id to use: configured, or unique to this process.
    pub fn effective_replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "reporter".into());
            let host: String = host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            format!(
                "{host}-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            )
        })
    }
}
