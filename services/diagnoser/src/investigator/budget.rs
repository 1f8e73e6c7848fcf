//! Hard limits of one investigation: tool steps, tokens, cost (at `[diagnoser.llm]`'s prices,
//! drawing on its hourly budget too) and wall time. A call whose worst case would cross a
//! limit is not made; a reply that crossed one ends the investigation.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use opsmesh_proto::investigation::StopReason;
use opsmesh_runtime::{ConfigError, Validate};

use crate::llm::Endpoint;

/// `[diagnoser.investigator.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Tool calls per investigation.
    pub max_steps: u32,
    /// Prompt plus completion tokens over all model calls.
    pub max_tokens: u64,
    pub max_cost_usd: f64,
    #[serde(with = "humantime_serde")]
    pub max_wall_time: Duration,
    /// Completion tokens per model call.
    pub max_completion_tokens: u32,
    /// A tool result longer than this is cut (and says so) before the model sees it.
    pub max_result_chars: usize,
    /// Each tool call (a search, an API read) ends after this, as a failed call.
    #[serde(with = "humantime_serde")]
    pub tool_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 12,
            max_tokens: 60_000,
            max_cost_usd: 0.05,
            max_wall_time: Duration::from_secs(120),
            max_completion_tokens: 800,
            max_result_chars: 4_000,
            tool_timeout: Duration::from_secs(15),
        }
    }
}

impl Validate for Limits {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (key, zero) in [
            ("max_steps", self.max_steps == 0),
            ("max_tokens", self.max_tokens == 0),
            ("max_completion_tokens", self.max_completion_tokens == 0),
            ("max_result_chars", self.max_result_chars < 200),
            ("max_wall_time", self.max_wall_time.is_zero()),
            ("tool_timeout", self.tool_timeout.is_zero()),
        ] {
            if zero {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    if key == "max_result_chars" {
                        "must be at least 200"
                    } else {
                        "must be positive"
                    },
                ));
            }
        }
        if !(self.max_cost_usd.is_finite() && self.max_cost_usd > 0.0) {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_cost_usd"),
                "must be a positive number",
            ));
        }
        Ok(())
    }
}

/// Why the loop stops, with the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub reason: StopReason,
    pub detail: String,
}

impl Stop {
    pub fn new(reason: StopReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// What one investigation has spent.
pub struct Budget {
    limits: Limits,
    endpoint: Arc<Endpoint>,
    steps: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    deadline: tokio::time::Instant,
}

impl Budget {
    pub fn new(limits: &Limits, endpoint: Arc<Endpoint>) -> Self {
        Self {
            deadline: tokio::time::Instant::now() + limits.max_wall_time,
            limits: limits.clone(),
            endpoint,
            steps: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
        }
    }

    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    pub fn tool_timeout(&self) -> Duration {
        self.limits.tool_timeout
    }

    pub fn wall_time_stop(&self) -> Stop {
        Stop::new(
            StopReason::WallTime,
            format!(
                "wall time {} used up",
                humantime::format_duration(self.limits.max_wall_time)
            ),
        )
    }

    fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Reserves the worst case of a model call whose prompt is about `prompt_estimate`
    /// tokens; the reservation is settled by [`Budget::charge`].
    pub fn before_call(&mut self, prompt_estimate: u64) -> Result<f64, Stop> {
        let completion = u64::from(self.limits.max_completion_tokens);
        if self.tokens() + prompt_estimate + completion > self.limits.max_tokens {
            return Err(Stop::new(
                StopReason::TokenLimit,
                format!(
                    "{} tokens spent; the next call may take {} more, over max_tokens {}",
                    self.tokens(),
                    prompt_estimate + completion,
                    self.limits.max_tokens
                ),
            ));
        }
        let worst = self.endpoint.cost(prompt_estimate, completion);
        if self.cost_usd + worst > self.limits.max_cost_usd {
            return Err(Stop::new(
                StopReason::CostLimit,
                format!(
                    "${:.4} spent; the next call may cost ${worst:.4}, over max_cost_usd ${:.4}",
                    self.cost_usd, self.limits.max_cost_usd
                ),
            ));
        }
        self.endpoint
            .reserve_hourly(worst)
            .map_err(|why| Stop::new(StopReason::CostLimit, why))?;
        Ok(worst)
    }

    /// Records what a call really took (the tokens the endpoint reported); over a limit, the
    /// investigation stops.
    pub fn charge(&mut self, reserved: f64, prompt: u64, completion: u64) -> Result<f64, Stop> {
        let cost = self.endpoint.cost(prompt, completion);
        self.endpoint.settle(reserved, cost);
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
        self.cost_usd += cost;
        if self.tokens() > self.limits.max_tokens {
            return Err(Stop::new(
                StopReason::TokenLimit,
                format!(
                    "{} tokens spent, over max_tokens {}",
                    self.tokens(),
                    self.limits.max_tokens
                ),
            ));
        }
        if self.cost_usd > self.limits.max_cost_usd {
            return Err(Stop::new(
                StopReason::CostLimit,
                format!(
                    "${:.4} spent, over max_cost_usd ${:.4}",
                    self.cost_usd, self.limits.max_cost_usd
                ),
            ));
        }
        Ok(cost)
    }

    /// Releases a reservation whose call never answered.
    pub fn release(&self, reserved: f64) {
        self.endpoint.settle(reserved, 0.0);
    }

    /// Counts one tool call.
    pub fn take_step(&mut self) -> Result<(), Stop> {
        if self.steps >= self.limits.max_steps {
            return Err(Stop::new(
                StopReason::StepLimit,
                format!("max_steps {} tool calls used", self.limits.max_steps),
            ));
        }
        self.steps += 1;
        Ok(())
    }

    /// `text` cut to `max_result_chars`, saying how much was cut.
    pub fn truncate(&self, text: String) -> String {
        let max = self.limits.max_result_chars;
        match text.char_indices().nth(max) {
            None => text,
            Some((cut, _)) => {
                let dropped = text[cut..].chars().count();
                format!("{}…[truncated: {dropped} more characters]", &text[..cut])
            }
        }
    }
}
