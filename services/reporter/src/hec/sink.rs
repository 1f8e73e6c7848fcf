//! One HEC request at a time, to Splunk (or a file): request building (concatenated
//! envelopes, gzip, channel, token), the ack and health endpoints, and the classification of
//! every answer by what the writer must do next.

use std::{collections::HashMap, io::Write, path::PathBuf, time::Duration};

use flate2::{Compression, write::GzEncoder};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use opsmesh_runtime::secret::{Secret, trimmed};

use super::{EncodeError, EncodedEvent, HecConfig, HecEvent};

pub const CHANNEL_HEADER: &str = "X-Splunk-Request-Channel";

#[derive(Debug, Clone, thiserror::Error)]
pub enum HecError {
    #[error("HEC unreachable: {0}")]
    Network(String),
    /// 429, 5xx (but 501) or HEC busy/unhealthy: retry with backoff.
    #[error("HEC busy ({status}, code {code}): {text}")]
    Busy {
        status: u16,
        code: i64,
        text: String,
    },
    /// 401/403, a disabled/invalid token, an index the token may not write, a missing or
    /// invalid channel, ack disabled, a wrong URL: nothing succeeds until an operator fixes
    /// the configuration, and no event is at fault.
    #[error("HEC refused the credentials or configuration ({status}, code {code}): {text}")]
    Refused {
        status: u16,
        code: i64,
        text: String,
    },
    /// `400` with `invalid-event-number`: the events before it were indexed, that one was
    /// refused, the ones after it were not looked at.
    #[error("HEC rejected event {invalid_event} of the batch (code {code}): {text}")]
    Partial {
        invalid_event: usize,
        code: i64,
        text: String,
    },
    /// The request was refused for its content, without saying which event (code 5/6, 413,
    /// other 4xx).
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
    /// Whether waiting and resending the same request can succeed. Refusals count as
    /// retryable: the events must not be dropped while an operator fixes the token.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Network(_) | Self::Busy { .. } | Self::Refused { .. } | Self::File(_)
        )
    }

    /// Label for `reporter_hec_requests_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Network(_) => "network_error",
            Self::Busy { .. } => "busy",
            Self::Refused { .. } => "refused",
            Self::Partial { .. } => "partial",
            Self::Rejected { .. } => "rejected",
            Self::File(_) => "file_error",
            Self::Setup(_) => "setup_error",
        }
    }
}

/// What HEC answers on every endpoint.
#[derive(Debug, Default, Deserialize)]
struct HecReply {
    #[serde(default)]
    text: String,
    #[serde(default = "unknown_code")]
    code: i64,
    #[serde(default, rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(default, rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

fn unknown_code() -> i64 {
    -1
}

#[derive(Deserialize)]
struct AckReply {
    acks: HashMap<String, bool>,
}

/// A request Splunk took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Set when the token has indexer acknowledgement on.
    pub ack_id: Option<u64>,
}

struct Http {
    client: reqwest::Client,
    event_url: String,
    ack_url: String,
    health_url: String,
    /// Read at each request: a rotated token file is used without a restart.
    token: Secret<String>,
    channel: String,
    gzip: bool,
}

impl Http {
    /// `Splunk <token>`, with the token as its file holds it now.
    fn authorization(&self) -> String {
        format!("Splunk {}", self.token.get())
    }
}

enum Target {
    Http(Box<Http>),
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
            (Some(url), _) => {
                let base = url.trim_end_matches('/');
                if base.starts_with("http://") {
                    tracing::warn!(url = %base, "HEC over plain http: the token travels unencrypted");
                }
                Target::Http(Box::new(Http {
                    client: build_client(config.timeout, config.ca_file.as_ref())?,
                    event_url: format!("{base}/services/collector/event"),
                    ack_url: format!("{base}/services/collector/ack"),
                    health_url: format!("{base}/services/collector/health"),
                    token: Secret::load("reporter.hec.token", &config.token_source(), trimmed)
                        .map_err(|e| HecError::Setup(e.to_string()))?
                        .ok_or_else(|| {
                            HecError::Setup(
                                "no HEC token configured (reporter.hec.token or token_file)".into(),
                            )
                        })?,
                    channel: config
                        .channel
                        .clone()
                        .unwrap_or_else(|| Uuid::new_v4().to_string()),
                    gzip: config.gzip,
                }))
            }
            (None, Some(file)) => Target::File(file.clone()),
            (None, None) => return Err(HecError::Setup("neither url nor file configured".into())),
        };
        Ok(Self {
            target,
            index: config.index.clone(),
            host,
        })
    }

    /// The typed HEC envelope of an opsmesh envelope.
    pub fn encode(&self, envelope: &[u8]) -> Result<HecEvent, EncodeError> {
        HecEvent::from_envelope(envelope, &self.index, &self.host)
    }

    /// The wire form of an opsmesh envelope.
    pub fn encode_line(&self, envelope: &[u8]) -> Result<EncodedEvent, EncodeError> {
        EncodedEvent::from_envelope(envelope, &self.index, &self.host)
    }

    /// The request channel GUID (`None` for a file).
    pub fn channel(&self) -> Option<&str> {
        match &self.target {
            Target::Http(http) => Some(&http.channel),
            Target::File(_) => None,
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(self.target, Target::File(_))
    }

    /// Sends typed events as one request.
    pub async fn send(&self, events: &[HecEvent]) -> Result<Accepted, HecError> {
        let lines: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).expect("HEC events serialize"))
            .collect();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        self.post(&refs).await
    }

    /// Sends one batch: the envelopes concatenated back to back (newline separated).
    pub async fn post(&self, lines: &[&[u8]]) -> Result<Accepted, HecError> {
        let size = lines.iter().map(|l| l.len() + 1).sum();
        let mut body = Vec::with_capacity(size);
        for line in lines {
            body.extend_from_slice(line);
            body.push(b'\n');
        }
        match &self.target {
            Target::File(path) => append(path, &body)
                .await
                .map(|()| Accepted { ack_id: None }),
            Target::Http(http) => {
                let mut request = http
                    .client
                    .post(&http.event_url)
                    .header("Authorization", http.authorization())
                    .header(CHANNEL_HEADER, &http.channel)
                    .header("Content-Type", "application/json");
                if http.gzip {
                    request = request.header("Content-Encoding", "gzip").body(gzip(&body));
                } else {
                    request = request.body(body);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| HecError::Network(error_chain(&e)))?;
                let status = response.status();
                let reply: HecReply = response.json().await.unwrap_or_default();
                classify(status, &reply).map(|()| Accepted {
                    ack_id: reply.ack_id,
                })
            }
        }
    }

    /// Asks which of `ids` (of this channel) are indexed. A `true` is answered once.
    pub async fn poll_acks(&self, ids: &[u64]) -> Result<HashMap<u64, bool>, HecError> {
        let Target::Http(http) = &self.target else {
            return Ok(ids.iter().map(|id| (*id, true)).collect());
        };
        let response = http
            .client
            .post(&http.ack_url)
            .header("Authorization", http.authorization())
            .header(CHANNEL_HEADER, &http.channel)
            .json(&serde_json::json!({ "acks": ids }))
            .send()
            .await
            .map_err(|e| HecError::Network(error_chain(&e)))?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            let reply: AckReply = serde_json::from_slice(&body).map_err(|e| HecError::Busy {
                status: status.as_u16(),
                code: -1,
                text: format!("unreadable ack reply: {e}"),
            })?;
            return Ok(reply
                .acks
                .into_iter()
                .filter_map(|(id, acked)| id.parse().ok().map(|id| (id, acked)))
                .collect());
        }
        let reply: HecReply = serde_json::from_slice(&body).unwrap_or_default();
        classify(status, &reply).map(|()| HashMap::new())
    }

    /// `GET /services/collector/health`: 200 code 17 when HEC can take events.
    pub async fn health(&self) -> Result<(), HecError> {
        let Target::Http(http) = &self.target else {
            return Ok(());
        };
        let response = http
            .client
            .get(&http.health_url)
            .send()
            .await
            .map_err(|e| HecError::Network(error_chain(&e)))?;
        let status = response.status();
        let reply: HecReply = response.json().await.unwrap_or_default();
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::SERVICE_UNAVAILABLE => Err(HecError::Busy {
                status: status.as_u16(),
                code: reply.code,
                text: reply.text,
            }),
            _ => classify(status, &reply),
        }
    }
}

/// The answer's meaning, per the HEC status code table.
fn classify(status: StatusCode, reply: &HecReply) -> Result<(), HecError> {
    let code = reply.code;
    let text = reply.text.clone();
    let status_code = status.as_u16();
    match status {
        s if s.is_success() && (code == 0 || code == -1) => Ok(()),
        s if s.is_success() => Err(HecError::Busy {
            status: status_code,
            code,
            text: format!("unexpected success reply: {text}"),
        }),
        StatusCode::TOO_MANY_REQUESTS => Err(HecError::Busy {
            status: status_code,
            code,
            text,
        }),
        s if s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED => Err(HecError::Busy {
            status: status_code,
            code,
            text,
        }),
        StatusCode::BAD_REQUEST => match (reply.invalid_event, code) {
            (Some(invalid_event), _) => Err(HecError::Partial {
                invalid_event,
                code,
                text,
            }),
            // Incorrect index, channel missing/invalid, ack disabled, query-string auth:
            // configuration, not data.
            (None, 7 | 10 | 11 | 14 | 16) => Err(HecError::Refused {
                status: status_code,
                code,
                text,
            }),
            (None, _) => Err(HecError::Rejected {
                status: status_code,
                code,
                text,
            }),
        },
        StatusCode::PAYLOAD_TOO_LARGE => Err(HecError::Rejected {
            status: status_code,
            code,
            text,
        }),
        // 401/403 (token), 404/405 (wrong URL), 501, and anything else unexpected: no
        // event is at fault, so nothing may be dropped.
        _ if status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 404 | 405) => {
            Err(HecError::Rejected {
                status: status_code,
                code,
                text,
            })
        }
        _ => Err(HecError::Refused {
            status: status_code,
            code,
            text,
        }),
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder.write_all(body).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn build_client(timeout: Duration, ca_file: Option<&PathBuf>) -> Result<reqwest::Client, HecError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| HecError::Setup(format!("reading {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| HecError::Setup(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(HecError::Setup(format!(
                "{}: no PEM certificate found",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| HecError::Setup(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: i64, invalid_event: Option<usize>) -> HecReply {
        HecReply {
            text: "t".into(),
            code,
            ack_id: None,
            invalid_event,
        }
    }

    fn check(status: u16, code: i64, invalid: Option<usize>) -> Result<(), HecError> {
        classify(StatusCode::from_u16(status).unwrap(), &reply(code, invalid))
    }

    #[test]
    fn the_code_table_maps_to_what_the_writer_does() {
        assert!(check(200, 0, None).is_ok());
        for (status, code) in [(503, 9), (500, 8), (429, -1), (502, -1), (503, 18)] {
            assert!(
                matches!(check(status, code, None), Err(HecError::Busy { .. })),
                "{status}/{code} is retried"
            );
        }
        for (status, code) in [
            (401, 2),
            (401, 3),
            (403, 1),
            (403, 4),
            (400, 7),
            (400, 10),
            (400, 11),
            (400, 14),
            (400, 16),
            (404, -1),
            (501, -1),
        ] {
            assert!(
                matches!(check(status, code, None), Err(HecError::Refused { .. })),
                "{status}/{code} pauses"
            );
        }
        for code in [6, 12, 13, 15] {
            assert!(matches!(
                check(400, code, Some(3)),
                Err(HecError::Partial {
                    invalid_event: 3,
                    ..
                })
            ));
        }
        for (status, code) in [(400, 5), (400, 6), (413, -1), (422, -1)] {
            assert!(
                matches!(check(status, code, None), Err(HecError::Rejected { .. })),
                "{status}/{code} is the data's fault"
            );
        }
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = b"{\"event\":1}\n{\"event\":2}\n".repeat(100);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gzip(&body).as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
