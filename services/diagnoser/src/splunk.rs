//! Evidence from Splunk through the REST export API (`POST /services/search/v2/jobs/export`,
//! `output_mode=json`): rows are streamed and bounded, message frames are honoured, and every
//! value taken from an alert is validated and escaped before it reaches SPL.

use std::{path::PathBuf, time::Duration};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};

use opsmesh_runtime::{
    ConfigError, Validate,
    secret::{InlineSecret, Secret, SecretSource, trimmed},
};

/// `[diagnoser.splunk]`. Without `url`, no Splunk evidence is gathered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplunkConfig {
    /// splunkd management URL, e.g. `https://splunk.example.com:8089`.
    pub url: Option<String>,
    /// Bearer token (or a session key with `scheme = "splunk"`); prefer `token_file`, which
    /// is re-read when it changes.
    pub token: Option<InlineSecret>,
    pub token_file: Option<PathBuf>,
    /// `bearer` (`Authorization: Bearer`) or `splunk` (`Authorization: Splunk <sessionKey>`).
    pub scheme: String,
    /// Index the opsmesh sourcetypes are in.
    pub index: String,
    /// Time range of every evidence search.
    pub earliest: String,
    /// Per-search timeout, streaming included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Rows read per search; the rest of the stream is abandoned.
    pub max_rows: usize,
    /// Extra CA bundle (PEM) for splunkd's certificate; verification is always on.
    pub ca_file: Option<PathBuf>,
}

impl Default for SplunkConfig {
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            token_file: None,
            scheme: "bearer".into(),
            index: "opsmesh".into(),
            earliest: "-1h".into(),
            timeout: Duration::from_secs(10),
            max_rows: 1000,
            ca_file: None,
        }
    }
}

impl SplunkConfig {
    /// `token` or `token_file`.
    pub fn token_source(&self) -> SecretSource {
        SecretSource::from_fields(self.token.as_ref(), self.token_file.as_deref(), None)
    }
}

impl Validate for SplunkConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        validate_url_and_token(
            prefix,
            self.url.as_deref(),
            self.token.is_some() || self.token_file.is_some(),
        )?;
        if !matches!(self.scheme.as_str(), "bearer" | "splunk") {
            return Err(ConfigError::invalid(
                format!("{prefix}.scheme"),
                "must be \"bearer\" or \"splunk\"",
            ));
        }
        if !is_safe_token(&self.index) {
            return Err(ConfigError::invalid(
                format!("{prefix}.index"),
                "must be letters, digits, '_' or '-'",
            ));
        }
        if self.max_rows == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_rows"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A Splunk endpoint, when set, is an http(s) URL with a token (inline or a file).
pub(crate) fn validate_url_and_token(
    prefix: &str,
    url: Option<&str>,
    has_token: bool,
) -> Result<(), ConfigError> {
    if let Some(url) = url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                format!("{prefix}.url"),
                "must be an http(s) URL",
            ));
        }
        if !has_token {
            return Err(ConfigError::invalid(
                format!("{prefix}.token"),
                "required with url (or token_file)",
            ));
        }
    }
    Ok(())
}

fn is_safe_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("Splunk unreachable: {0}")]
    Unreachable(String),
    #[error("Splunk refused the credentials ({status})")]
    Unauthorized { status: u16 },
    #[error("Splunk rejected the search ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("Splunk is busy ({status}): {message}")]
    Busy { status: u16, message: String },
    #[error("the search failed: {0}")]
    Failed(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("Splunk client setup: {0}")]
    Setup(String),
}

/// A quoted SPL string literal: the value can only ever be data.
pub fn spl_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Line breaks would end the search in some contexts: drop them.
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An SPL search built from a template with escaped values.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub spl: String,
    pub earliest: String,
}

/// Evidence searches per kind of target. Field names follow the HEC envelopes the reporter
/// writes (`payload.record.*` under `opsmesh:*` sourcetypes).
pub fn model_search(index: &str, earliest: &str, namespace: &str, name: &str) -> Search {
    Search {
        spl: format!(
            "search index={index} sourcetype=\"opsmesh:models\" \"payload.record.namespace\"={} \"payload.record.name\"={} \
             | stats max(\"payload.record.restarts\") as restarts max(\"payload.record.oom_killed\") as oom_killed \
             latest(\"payload.record.last_termination_reason\") as last_termination_reason \
             latest(\"payload.record.waiting_reason\") as waiting_reason latest(\"payload.record.ready\") as ready",
            spl_string(namespace),
            spl_string(name)
        ),
        earliest: earliest.to_owned(),
    }
}

pub fn policy_search(index: &str, earliest: &str, namespace: &str, policy: &str) -> Search {
    Search {
        spl: format!(
            "search index={index} sourcetype=\"opsmesh:policies\" \"payload.record.namespace\"={} \"payload.record.policy\"={} \
             | stats sum(\"payload.record.denials\") as denials latest(\"payload.record.message\") as message by \"payload.record.resource\"",
            spl_string(namespace),
            spl_string(policy)
        ),
        earliest: earliest.to_owned(),
    }
}

pub fn cost_search(index: &str, earliest: &str, namespace: &str) -> Search {
    Search {
        spl: format!(
            "search index={index} sourcetype=\"opsmesh:costs\" \"payload.record.namespace\"={} \
             | timechart span=10m max(\"payload.record.hourly_cost_usd\") as hourly_cost_usd",
            spl_string(namespace)
        ),
        earliest: earliest.to_owned(),
    }
}

pub fn application_search(index: &str, earliest: &str, application: &str) -> Search {
    Search {
        spl: format!(
            "search index={index} sourcetype=\"opsmesh:argocd\" \"payload.record.application\"={} \
             | stats latest(\"payload.record.sync\") as sync latest(\"payload.record.health\") as health latest(\"payload.record.revision\") as revision",
            spl_string(application)
        ),
        earliest: earliest.to_owned(),
    }
}

/// One search's outcome.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub rows: Vec<Map<String, Value>>,
    /// More rows were available than `max_rows`.
    pub truncated: bool,
    /// WARN/INFO message frames, kept for the record.
    pub messages: Vec<String>,
}

/// The token configured at `key` (`token` or `token_file`), read again whenever its file
/// changes.
pub(crate) fn load_token(key: &str, source: &SecretSource) -> Result<Secret<String>, SearchError> {
    Secret::load(key, source, trimmed)
        .map_err(|e| SearchError::Setup(e.to_string()))?
        .ok_or_else(|| SearchError::Setup(format!("no token configured ({key} or {key}_file)")))
}

pub struct SplunkClient {
    client: reqwest::Client,
    endpoint: String,
    /// `Bearer` or `Splunk`.
    scheme: &'static str,
    /// Read at each search: a rotated token file is used without a restart.
    token: Secret<String>,
    config: SplunkConfig,
}

impl SplunkClient {
    pub fn new(config: &SplunkConfig) -> Result<Option<Self>, SearchError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let token = load_token("diagnoser.splunk.token", &config.token_source())?;
        let mut builder = reqwest::Client::builder().timeout(config.timeout);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| SearchError::Setup(format!("{}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SearchError::Setup(e.to_string()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let scheme = if config.scheme == "splunk" {
            "Splunk"
        } else {
            "Bearer"
        };
        Ok(Some(Self {
            client: builder
                .build()
                .map_err(|e| SearchError::Setup(e.to_string()))?,
            endpoint: format!(
                "{}/services/search/v2/jobs/export",
                url.trim_end_matches('/')
            ),
            scheme,
            token,
            config: config.clone(),
        }))
    }

    pub fn config(&self) -> &SplunkConfig {
        &self.config
    }

    /// Runs `search`, reading at most `max_rows` rows, within `timeout`.
    #[tracing::instrument(name = "splunk.search", skip_all, fields(otel.kind = "client", db.system.name = "splunk", db.query.text = %search.spl))]
    pub async fn run(&self, search: &Search) -> Result<Results, SearchError> {
        tokio::time::timeout(self.config.timeout, self.stream(search))
            .await
            .map_err(|_| SearchError::Timeout(self.config.timeout))?
    }

    async fn stream(&self, search: &Search) -> Result<Results, SearchError> {
        let response = self
            .client
            .post(&self.endpoint)
            .header(
                "Authorization",
                format!("{} {}", self.scheme, self.token.get()),
            )
            .form(&[
                ("search", search.spl.as_str()),
                ("earliest_time", search.earliest.as_str()),
                ("latest_time", "now"),
                ("output_mode", "json"),
            ])
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let message = splunk_message(&response.text().await.unwrap_or_default());
            return Err(match status {
                401 | 403 => SearchError::Unauthorized { status },
                503 | 429 => SearchError::Busy { status, message },
                _ => SearchError::Rejected { status, message },
            });
        }
        let mut results = Results::default();
        let mut buffer = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| self.transport_error(e))?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if self.frame(&line, &mut results)? {
                    return Ok(results);
                }
            }
        }
        self.frame(&buffer, &mut results)?;
        Ok(results)
    }

    fn transport_error(&self, error: reqwest::Error) -> SearchError {
        if error.is_timeout() {
            SearchError::Timeout(self.config.timeout)
        } else {
            SearchError::Unreachable(error.to_string())
        }
    }

    /// Handles one NDJSON frame; `true` when reading can stop.
    fn frame(&self, line: &[u8], results: &mut Results) -> Result<bool, SearchError> {
        let text = std::str::from_utf8(line).unwrap_or("").trim();
        if text.is_empty() {
            return Ok(false);
        }
        let frame: Value = serde_json::from_str(text)
            .map_err(|e| SearchError::Failed(format!("unreadable frame: {e}")))?;
        if let Some(messages) = frame.get("messages").and_then(Value::as_array) {
            for message in messages {
                let kind = message
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("INFO");
                let text = message.get("text").and_then(Value::as_str).unwrap_or("");
                if matches!(kind, "FATAL" | "ERROR") {
                    return Err(SearchError::Failed(format!("{kind}: {text}")));
                }
                results.messages.push(format!("{kind}: {text}"));
            }
        }
        if let Some(Value::Object(row)) = frame.get("result") {
            if results.rows.len() >= self.config.max_rows {
                results.truncated = true;
                return Ok(true);
            }
            results.rows.push(row.clone());
        }
        Ok(frame
            .get("lastrow")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }
}

/// The `text` of Splunk's `{"messages":[{"type":"ERROR","text":…}]}` error bodies.
fn splunk_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["messages"][0]["text"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits SPL into its pipeline stages, honouring quoted strings and escapes.
    fn stages(spl: &str) -> Vec<String> {
        let mut stages = vec![String::new()];
        let (mut quoted, mut escaped) = (false, false);
        for c in spl.chars() {
            match (quoted, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => quoted = !quoted,
                (false, _, '|') => {
                    stages.push(String::new());
                    continue;
                }
                _ => {}
            }
            stages.last_mut().unwrap().push(c);
        }
        stages
    }

    #[test]
    fn an_injection_attempt_cannot_change_the_query() {
        let hostile = "ml-team-a\" OR index=* | delete | search \"x";
        let honest = model_search("opsmesh", "-1h", "ml-team-a", "gpt-oss-120b");
        let attacked = model_search("opsmesh", "-1h", hostile, "gpt-oss-120b");
        assert_eq!(
            stages(&attacked.spl).len(),
            stages(&honest.spl).len(),
            "{}",
            attacked.spl
        );
        assert!(
            !stages(&attacked.spl)
                .iter()
                .any(|s| s.trim_start().starts_with("delete"))
        );
        assert!(
            attacked
                .spl
                .contains("\\\" OR index=* | delete | search \\\"x\""),
            "{}",
            attacked.spl
        );
        let backslashes = spl_string("a\\\" | delete");
        assert_eq!(backslashes, "\"a\\\\\\\" | delete\"");
        assert_eq!(
            stages(&format!("search x={backslashes} | stats count")).len(),
            2
        );
    }

    #[test]
    fn newlines_do_not_survive() {
        assert_eq!(spl_string("a\nb"), "\"a b\"");
    }
}
