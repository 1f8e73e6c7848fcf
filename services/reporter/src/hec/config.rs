use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use opsmesh_runtime::{ConfigError, Validate};

/// `[reporter.hec]`: where events go. Exactly one of `url` (Splunk) or `file` (JSON lines of
/// HEC envelopes, for the demo and air-gapped runs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HecConfig {
    /// Base URL of the HEC endpoint, e.g. `https://splunk.example.com:8088`.
    pub url: Option<String>,
    /// HEC token. Prefer `token_file` (a mounted Secret) or `OPSMESH__REPORTER__HEC__TOKEN`.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Write HEC envelopes to this file instead of Splunk.
    pub file: Option<PathBuf>,
    /// Splunk index the events go to (must be allowed for the token).
    pub index: String,
    /// `host` field; defaults to the machine's host name.
    pub host: Option<String>,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM bundle of extra CAs trusted for the HEC endpoint (verification is always on).
    pub ca_file: Option<PathBuf>,
}

impl Default for HecConfig {
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            token_file: None,
            file: None,
            index: "opsmesh".into(),
            host: None,
            timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

impl Validate for HecConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        match (&self.url, &self.file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{prefix}.file"),
                    "set either url or file, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{prefix}.url"),
                    "required (or set file to write HEC events to a file)",
                ));
            }
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.url"),
                        "must be an http(s) URL",
                    ));
                }
                if self.token.is_none() && self.token_file.is_none() {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.token"),
                        "required with url (or token_file)",
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        if self.index.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{prefix}.index"),
                "must not be empty",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{prefix}.timeout"),
                "must be > 0",
            ));
        }
        Ok(())
    }
}
