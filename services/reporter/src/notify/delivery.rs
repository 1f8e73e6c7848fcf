//! Sending one notification to one route, with retries — and without ever naming the
//! route's URL in what it reports: a Slack webhook URL is a credential (its path is the
//! secret), and what a delivery reports ends up in logs and dead letters.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Notifier, Route, notice::truncate};

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
    /// Shutdown came first.
    Interrupted {
        attempts: u32,
        last: String,
    },
}

impl Delivery {
    /// `outcome` label of `reporter_notifications_total`.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Rejected { .. } => "rejected",
            Self::GaveUp { .. } => "gave_up",
            Self::Interrupted { .. } => "interrupted",
        }
    }
}

/// A request error's message and its causes, without the URL reqwest puts in it.
fn without_url(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Notifier {
    /// Sends `body` to `route` until it is accepted, refused with a 4xx other than 429,
    /// `retry_budget` (or `max_attempts`) runs out, or shutdown.
    pub(super) async fn deliver(
        &self,
        route: &Route,
        body: &Value,
        shutdown: &CancellationToken,
    ) -> Delivery {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = tokio::select! {
                () = shutdown.cancelled() => {
                    return Delivery::Interrupted { attempts: attempt - 1, last: "shutdown during an attempt".into() };
                }
                sent = self.client.post(route.url()).json(body).send() => sent,
            };
            let (retry_after, last) = match sent {
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
                // Connect errors and timeouts (`timeout`) alike: the route may come back.
                Err(err) => (None, format!("network: {}", without_url(err))),
            };
            if self.config.max_attempts.is_some_and(|max| attempt >= max) {
                return Delivery::GaveUp {
                    attempts: attempt,
                    last,
                };
            }
            let backoff = self.backoff(attempt);
            let delay = retry_after.map_or(backoff, |ra| ra.max(backoff));
            if started.elapsed() + delay > self.config.retry_budget {
                return Delivery::GaveUp {
                    attempts: attempt,
                    last: format!("{last} (next retry in {delay:?} exceeds retry_budget)"),
                };
            }
            tracing::warn!(route = %route.name, attempt, ?delay, error = %last, "notification retry");
            tokio::select! {
                () = shutdown.cancelled() => {
                    return Delivery::Interrupted { attempts: attempt, last };
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Exponential backoff with jitter: `retry_backoff` doubling up to `retry_backoff_max`.
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        opsmesh_runtime::backoff::delay(
            self.config.retry_backoff,
            self.config.retry_backoff_max,
            attempt,
        )
    }
}
