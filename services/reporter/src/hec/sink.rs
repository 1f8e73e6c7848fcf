//! Delivery of HEC events to Splunk (or a file), classifying failures by whether a retry
//! can help.

use std::{path::PathBuf, time::Duration};

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::{EncodeError, HecConfig, HecEvent};

#[derive(Debug, thiserror::Error)]
pub enum HecError {
    #[error("HEC unreachable: {0}")]
    Network(String),
    /// 429, 5xx, or HEC busy/unhealthy: retry with backoff.
    #[error("HEC busy ({status}): {text}")]
    Busy { status: u16, text: String },
    /// 401/403 or a disabled/invalid token or index: nothing succeeds until fixed.
    #[error("HEC refused the credentials or index ({status}, code {code}): {text}")]
    Unauthorized {
        status: u16,
        code: i64,
        text: String,
    },
    /// The data itself was refused.
    #[error("HEC rejected the data ({status}, code {code}): {text}")]
    Rejected {
        status: u16,
        code: i64,
        text: String,
    },
    #[error("writing HEC file: {0}")]
    File(String),
    #[error("HEC client setup: {0}")]
    Setup(String),
}

impl HecError {
    /// Whether waiting and resending can succeed. Credential errors count as retryable: the
    /// events must not be dropped while an operator fixes the token.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected { .. } | Self::Setup(_))
    }
}

#[derive(Deserialize)]
struct HecReply {
    #[serde(default)]
    text: String,
    #[serde(default = "unknown_code")]
    code: i64,
}

fn unknown_code() -> i64 {
    -1
}

enum Target {
    Http {
        client: reqwest::Client,
        endpoint: String,
        authorization: String,
        channel: String,
    },
    File(PathBuf),
}

pub struct HecSink {
    target: Target,
    index: String,
    host: String,
}

impl HecSink {
    pub fn new(config: &HecConfig) -> Result<Self, HecError> {
        let host = config.host.clone().unwrap_or_else(local_host_name);
        let target = match (&config.url, &config.file) {
            (Some(url), _) => Target::Http {
                client: build_client(config.timeout, config.ca_file.as_ref())?,
                endpoint: format!("{}/services/collector/event", url.trim_end_matches('/')),
                authorization: format!("Splunk {}", read_token(config)?),
                channel: Uuid::new_v4().to_string(),
            },
            (None, Some(file)) => Target::File(file.clone()),
            (None, None) => return Err(HecError::Setup("neither url nor file configured".into())),
        };
        Ok(Self {
            target,
            index: config.index.clone(),
            host,
        })
    }

    pub fn encode(&self, envelope: &[u8]) -> Result<HecEvent, EncodeError> {
        HecEvent::from_envelope(envelope, &self.index, &self.host)
    }

    /// Sends a batch: HEC envelopes concatenated back to back.
    pub async fn send(&self, events: &[HecEvent]) -> Result<(), HecError> {
        let mut body = Vec::new();
        for event in events {
            serde_json::to_writer(&mut body, event).expect("HEC events serialize");
            body.push(b'\n');
        }
        match &self.target {
            Target::File(path) => append(path, &body).await,
            Target::Http {
                client,
                endpoint,
                authorization,
                channel,
            } => {
                let response = client
                    .post(endpoint)
                    .header("Authorization", authorization)
                    .header("X-Splunk-Request-Channel", channel)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| HecError::Network(e.to_string()))?;
                let status = response.status();
                let reply: HecReply = response.json().await.unwrap_or(HecReply {
                    text: String::new(),
                    code: -1,
                });
                classify(status, reply)
            }
        }
    }
}

fn classify(status: StatusCode, reply: HecReply) -> Result<(), HecError> {
    let HecReply { text, code } = reply;
    let status_code = status.as_u16();
    match status {
        StatusCode::OK if code == 0 || code == -1 => Ok(()),
        StatusCode::TOO_MANY_REQUESTS => Err(HecError::Busy {
            status: status_code,
            text,
        }),
        s if s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED => Err(HecError::Busy {
            status: status_code,
            text,
        }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(HecError::Unauthorized {
            status: status_code,
            code,
            text,
        }),
        // Incorrect index: configuration, not data.
        StatusCode::BAD_REQUEST if code == 7 => Err(HecError::Unauthorized {
            status: status_code,
            code,
            text,
        }),
        _ => Err(HecError::Rejected {
            status: status_code,
            code,
            text,
        }),
    }
}

fn build_client(timeout: Duration, ca_file: Option<&PathBuf>) -> Result<reqwest::Client, HecError> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| HecError::Setup(format!("reading {}: {e}", path.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| HecError::Setup(format!("{}: {e}", path.display())))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| HecError::Setup(e.to_string()))
}

fn read_token(config: &HecConfig) -> Result<String, HecError> {
    match (&config.token, &config.token_file) {
        (Some(token), _) => Ok(token.trim().to_owned()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| HecError::Setup(format!("reading token_file {}: {e}", path.display()))),
        (None, None) => Err(HecError::Setup("no HEC token configured".into())),
    }
}

async fn append(path: &PathBuf, body: &[u8]) -> Result<(), HecError> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| HecError::File(format!("{}: {e}", path.display())))?;
    file.write_all(body)
        .await
        .map_err(|e| HecError::File(format!("{}: {e}", path.display())))?;
    file.flush()
        .await
        .map_err(|e| HecError::File(format!("{}: {e}", path.display())))
}

fn local_host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "opsmesh-reporter".into())
}
