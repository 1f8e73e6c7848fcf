//! The OpenAI-compatible endpoint of `[diagnoser.llm]`, shared by the advisor and the
//! investigator: one client per API key (rebuilt when the key file changes), the prices, and
//! the hourly budget both draw on.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_openai::{Client, config::OpenAIConfig, error::OpenAIError};

use opsmesh_runtime::{ConfigError, secret::Secret};

use super::LlmConfig;

pub struct Endpoint {
    http: reqwest::Client,
    api_key: Secret<String>,
    /// The client of the key it was built with, built again when the key file changes.
    client: Mutex<(Arc<String>, Client<OpenAIConfig>)>,
    config: LlmConfig,
    /// Spend in the current hour: (start of the hour window, USD).
    hour: Mutex<(Instant, f64)>,
}

/// An API key: surrounding whitespace is not part of it. It may be empty: local endpoints
/// (Ollama, vLLM) take none.
fn api_key(text: &str) -> Result<String, String> {
    Ok(text.trim().to_owned())
}

impl Endpoint {
    /// The endpoint `config` names, whether or not the advisor is enabled.
    pub fn new(config: &LlmConfig) -> Result<Self, ConfigError> {
        let api_key = Secret::load("diagnoser.llm.api_key", &config.api_key_source(), api_key)?
            .ok_or_else(|| {
                ConfigError::invalid(
                    "diagnoser.llm.api_key_env",
                    "set api_key_env or api_key_file",
                )
            })?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ConfigError::invalid("diagnoser.llm", e.to_string()))?;
        let key = api_key.get();
        let client = openai_client(config, &http, &key);
        Ok(Self {
            http,
            api_key,
            client: Mutex::new((key, client)),
            config: config.clone(),
            hour: Mutex::new((Instant::now(), 0.0)),
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The client of the current API key.
    pub(crate) fn client(&self) -> Client<OpenAIConfig> {
        let key = self.api_key.get();
        let mut current = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        // `get` hands out the same value until the key file changes.
        if !Arc::ptr_eq(&current.0, &key) {
            let client = openai_client(&self.config, &self.http, &key);
            *current = (key, client);
        }
        current.1.clone()
    }

    /// USD for these tokens at the configured prices.
    pub(crate) fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.config.prompt_price_per_million_usd
            + completion_tokens as f64 * self.config.completion_price_per_million_usd)
            / 1e6
    }

    /// Reserves the worst-case cost of a call in the hourly budget, or says why not.
    pub(crate) fn reserve_hourly(&self, worst: f64) -> Result<(), String> {
        let mut hour = self.hour.lock().unwrap_or_else(PoisonError::into_inner);
        if hour.0.elapsed() >= Duration::from_secs(3600) {
            *hour = (Instant::now(), 0.0);
        }
        if hour.1 + worst > self.config.budget_per_hour_usd {
            return Err(format!(
                "hourly budget ${:.4} exhausted (${:.4} spent)",
                self.config.budget_per_hour_usd, hour.1
            ));
        }
        hour.1 += worst;
        Ok(())
    }

    /// Replaces a reservation by the real cost.
    pub(crate) fn settle(&self, reserved: f64, actual: f64) {
        let mut hour = self.hour.lock().unwrap_or_else(PoisonError::into_inner);
        hour.1 = (hour.1 - reserved + actual).max(0.0);
    }
}

fn openai_client(config: &LlmConfig, http: &reqwest::Client, key: &str) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(&config.base_url)
            .with_api_key(key),
    )
    .with_http_client(http.clone())
}

/// Why a call failed, for the record.
pub(crate) fn describe(err: &OpenAIError) -> String {
    match err {
        OpenAIError::Reqwest(e) if e.is_timeout() => "discarded: the LLM timed out".into(),
        OpenAIError::ApiError(api) => format!(
            "discarded: the LLM endpoint answered {}: {}",
            api.status_code.as_u16(),
            api.api_error.message
        ),
        other => format!("discarded: {other}"),
    }
}
