use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use opsmesh_runtime::{
    ConfigError, Validate,
    secret::{InlineSecret, SecretSource},
};

/// `[reporter.hec]`: where events go and how they are batched. Exactly one of `url` (Splunk)
/// or `file` (JSON lines of HEC envelopes, for the demo and air-gapped runs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HecConfig {
    /// Base URL of the HEC endpoint, e.g. `https://splunk.example.com:8088`.
    pub url: Option<String>,
    /// HEC token. Prefer `token_file` (a mounted Secret, re-read when it changes: a rotated
    /// token is used without a restart) or `OPSMESH__REPORTER__HEC__TOKEN`.
    pub token: Option<InlineSecret>,
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
    /// `X-Splunk-Request-Channel` GUID; a random one per process when unset.
    pub channel: Option<String>,
    /// Compress request bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// A batch is sent when it holds this many events...
    pub max_batch_events: usize,
    /// ...or would exceed this many (uncompressed) bytes — keep it under Splunk Cloud's 1 MB...
    pub max_batch_bytes: usize,
    /// ...or its first event has waited this long while another batch was being delivered
    /// (with nothing in flight a batch goes at once).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Batches sent (or awaiting acknowledgement) concurrently. Offsets are still stored in
    /// order.
    pub max_in_flight: usize,
    /// First retry delay after a network error, 429 or 5xx; doubles per attempt with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Envelope ids remembered to drop redeliveries before they reach Splunk twice.
    pub dedup_capacity: usize,
    pub ack: AckConfig,
}

/// `[reporter.hec.ack]`: indexer acknowledgement (the token must have it enabled).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AckConfig {
    pub enabled: bool,
    /// How often `/services/collector/ack` is polled for the pending ack ids.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A batch not acknowledged within this long is sent again (`false` means pending *or*
    /// dropped).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AckConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            poll_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
        }
    }
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
            channel: None,
            gzip: true,
            max_batch_events: 500,
            max_batch_bytes: 900 * 1000,
            linger: Duration::from_millis(200),
            max_in_flight: 4,
            retry_backoff: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(10),
            dedup_capacity: 100_000,
            ack: AckConfig::default(),
        }
    }
}

impl HecConfig {
    /// `token` or `token_file`.
    pub fn token_source(&self) -> SecretSource {
        SecretSource::from_fields(self.token.as_ref(), self.token_file.as_deref(), None)
    }
}

impl Validate for HecConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, problem: &str| ConfigError::invalid(format!("{prefix}.{key}"), problem);
        match (&self.url, &self.file) {
            (Some(_), Some(_)) => return Err(invalid("file", "set either url or file, not both")),
            (None, None) => {
                return Err(invalid(
                    "url",
                    "required (or set file to write HEC events to a file)",
                ));
            }
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid("url", "must be an http(s) URL"));
                }
                if self.token.is_none() && self.token_file.is_none() {
                    return Err(invalid("token", "required with url (or token_file)"));
                }
            }
            (None, Some(_)) => {}
        }
        if self.index.trim().is_empty() {
            return Err(invalid("index", "must not be empty"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be > 0"));
        }
        if let Some(channel) = &self.channel
            && uuid::Uuid::parse_str(channel).is_err()
        {
            return Err(invalid("channel", "must be a GUID"));
        }
        if self.max_batch_events == 0 {
            return Err(invalid("max_batch_events", "must be at least 1"));
        }
        if self.max_batch_bytes < 1024 {
            return Err(invalid("max_batch_bytes", "must be at least 1024"));
        }
        if self.linger.is_zero() {
            return Err(invalid("linger", "must be > 0"));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        if self.retry_backoff.is_zero() {
            return Err(invalid("retry_backoff", "must be > 0"));
        }
        if self.retry_backoff > self.retry_backoff_max {
            return Err(invalid(
                "retry_backoff",
                "must not exceed retry_backoff_max",
            ));
        }
        if self.ack.poll_interval.is_zero() {
            return Err(invalid("ack.poll_interval", "must be > 0"));
        }
        if self.ack.timeout <= self.ack.poll_interval {
            return Err(invalid(
                "ack.timeout",
                "must be longer than ack.poll_interval",
            ));
        }
        if self.ack.enabled && self.file.is_some() {
            return Err(invalid("ack.enabled", "needs url, not file"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url() -> HecConfig {
        HecConfig {
            url: Some("https://splunk:8088".into()),
            token: Some("t".into()),
            ..HecConfig::default()
        }
    }

    #[test]
    fn defaults_with_url_are_valid() {
        with_url().validate("reporter.hec").unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(HecConfig, &str)> = vec![
            (
                HecConfig {
                    max_batch_events: 0,
                    ..with_url()
                },
                "`reporter.hec.max_batch_events`",
            ),
            (
                HecConfig {
                    channel: Some("not-a-guid".into()),
                    ..with_url()
                },
                "`reporter.hec.channel`",
            ),
            (
                HecConfig {
                    ack: AckConfig {
                        timeout: Duration::from_secs(1),
                        ..AckConfig::default()
                    },
                    ..with_url()
                },
                "`reporter.hec.ack.timeout`",
            ),
            (
                HecConfig {
                    retry_backoff: Duration::from_secs(60),
                    ..with_url()
                },
                "`reporter.hec.retry_backoff`",
            ),
            (
                HecConfig {
                    token: None,
                    ..with_url()
                },
                "`reporter.hec.token`",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate("reporter.hec").unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }
}
