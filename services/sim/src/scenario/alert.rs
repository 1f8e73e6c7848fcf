//! The alerts a scenario sends, and how (Splunk alert action or webhook, Alertmanager).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use opsmesh_proto::alert::AlertStatus;

use super::Dur;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    SplunkAlertAction,
    SplunkWebhook,
    Alertmanager,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    #[serde(default)]
    pub at: Dur,
    pub via: Via,
    pub search_name: String,
    /// `resolved`: the sender says the condition ended (Alertmanager only).
    #[serde(default = "firing")]
    pub status: AlertStatus,
    #[serde(default = "super::one")]
    pub repeat: u32,
    #[serde(default)]
    pub every: Option<Dur>,
    #[serde(default)]
    pub rows: Vec<BTreeMap<String, Value>>,
}

fn firing() -> AlertStatus {
    AlertStatus::Firing
}

impl AlertSpec {
    /// Rows with every value as Splunk sends it: a string (or a list of strings).
    pub fn string_rows(&self) -> Vec<BTreeMap<String, Value>> {
        self.rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(_) | Value::Array(_) => v.clone(),
                            Value::Null => Value::String(String::new()),
                            other => Value::String(other.to_string()),
                        };
                        (k.clone(), v)
                    })
                    .collect()
            })
            .collect()
    }
}
