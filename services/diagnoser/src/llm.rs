//! The optional LLM advisor (any OpenAI-compatible endpoint, through async-openai). It may write
//! the incident narrative and, when the rules are not confident, choose among the actions the
//! runbook section allows. It never decides alone: output that is not valid JSON of the
//! expected shape, cites evidence that does not exist or names an action the section does not
//! allow is discarded, and the discard is recorded. Tokens and cost are counted per incident,
//! and per-incident and per-hour budgets are hard caps; the metrics count calls by outcome,
//! tokens and cost.

mod endpoint;
mod metrics;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequestArgs, ResponseFormat,
};
use prometheus::Registry;
use serde::Deserialize;
use serde_json::json;

use opsmesh_proto::{
    ActionKind,
    diagnosis::{Evidence, LlmUsage},
};
use opsmesh_runtime::{ConfigError, Validate, secret::SecretSource};

pub use endpoint::Endpoint;
pub(crate) use endpoint::describe;
use metrics::{LlmMetrics, Outcome};

/// `[diagnoser.llm]`; off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    pub enabled: bool,
    /// OpenAI-compatible API base (OpenAI, Groq, vLLM, Ollama: `http://host:11434/v1`).
    pub base_url: String,
    /// Environment variable holding the API key, or a file with it (re-read when it
    /// changes). A file, when set, replaces the variable (which defaults to `OPENAI_API_KEY`).
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub model: String,
    /// Prices per million tokens, for the cost accounting and budgets.
    pub prompt_price_per_million_usd: f64,
    pub completion_price_per_million_usd: f64,
    pub max_completion_tokens: u32,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Hard caps: a call whose worst-case cost would exceed either is not made.
    pub budget_per_incident_usd: f64,
    pub budget_per_hour_usd: f64,
    /// Below this rule confidence the LLM may choose among the section's actions.
    pub choose_below_confidence: f64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            api_key_file: None,
            model: "gpt-4o-mini".into(),
            prompt_price_per_million_usd: 0.15,
            completion_price_per_million_usd: 0.60,
            max_completion_tokens: 600,
            timeout: Duration::from_secs(20),
            budget_per_incident_usd: 0.05,
            budget_per_hour_usd: 1.0,
            choose_below_confidence: 0.7,
        }
    }
}

impl LlmConfig {
    /// `api_key_file`, else `api_key_env`.
    pub fn api_key_source(&self) -> SecretSource {
        match &self.api_key_file {
            Some(file) => SecretSource::from_fields(None, Some(file), None),
            None => SecretSource::from_fields(None, None, self.api_key_env.as_deref()),
        }
    }
}

impl LlmConfig {
    /// The endpoint settings, checked whenever the advisor or the investigator uses them.
    pub fn validate_endpoint(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                format!("{prefix}.base_url"),
                "must be an http(s) URL",
            ));
        }
        if self.api_key_env.is_none() && self.api_key_file.is_none() {
            return Err(ConfigError::invalid(
                format!("{prefix}.api_key_env"),
                "set api_key_env or api_key_file",
            ));
        }
        for (key, value) in [
            ("budget_per_incident_usd", self.budget_per_incident_usd),
            ("budget_per_hour_usd", self.budget_per_hour_usd),
            (
                "prompt_price_per_million_usd",
                self.prompt_price_per_million_usd,
            ),
            (
                "completion_price_per_million_usd",
                self.completion_price_per_million_usd,
            ),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    "must be a non-negative number",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for LlmConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        self.validate_endpoint(prefix)
    }
}

/// What the LLM contributed to one diagnosis.
#[derive(Debug, Clone, Default)]
pub struct Advice {
    pub narrative: Option<String>,
    pub chosen_action: Option<ActionKind>,
    pub usage: LlmUsage,
}

/// The only shape accepted from the model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    narrative: String,
    evidence_ids: Vec<String>,
    #[serde(default)]
    choose_action: Option<ActionKind>,
}

pub struct Advisor {
    endpoint: Arc<Endpoint>,
    config: LlmConfig,
    metrics: LlmMetrics,
}

impl Advisor {
    /// The advisor when `config` enables it, its metrics registered in `registry`.
    pub fn new(config: &LlmConfig, registry: &Registry) -> Result<Option<Self>, ConfigError> {
        if !config.enabled {
            return Ok(None);
        }
        Ok(Some(Self {
            endpoint: Arc::new(Endpoint::new(config)?),
            config: config.clone(),
            metrics: LlmMetrics::new(registry),
        }))
    }

    /// Its endpoint, whose hourly budget the investigator shares.
    pub fn endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.clone()
    }

    /// Reserves the worst-case cost of a call in the budgets, or says why not.
    fn reserve(&self, worst: f64) -> Result<(), String> {
        if worst > self.config.budget_per_incident_usd {
            return Err(format!(
                "worst-case cost ${worst:.4} exceeds the per-incident budget ${:.4}",
                self.config.budget_per_incident_usd
            ));
        }
        self.endpoint.reserve_hourly(worst)
    }

    /// Asks for a narrative (and, if `may_choose`, a choice among `allowed`).
    #[tracing::instrument(name = "llm.advise", skip_all, fields(otel.kind = "client", gen_ai.request.model = %self.config.model))]
    pub async fn advise(
        &self,
        summary: &str,
        evidence: &[Evidence],
        allowed: &[ActionKind],
        may_choose: bool,
    ) -> Advice {
        let mut advice = Advice {
            usage: LlmUsage {
                used: true,
                model: Some(self.config.model.clone()),
                ..LlmUsage::default()
            },
            ..Advice::default()
        };
        let facts = json!({
            "summary": summary,
            "evidence": evidence.iter().map(|e| json!({"id": e.id, "source": e.source, "query": e.query, "values": e.values, "error": e.error})).collect::<Vec<_>>(),
            "allowed_actions": allowed,
            "may_choose_action": may_choose,
        });
        let system = "You are an SRE assistant. Reply with one JSON object only: \
            {\"narrative\": string (2-4 sentences for the on-call engineer, citing evidence ids like ev1), \
            \"evidence_ids\": [ids you cite], \"choose_action\": null or one of allowed_actions (only if may_choose_action)}. \
            Cite only evidence ids given. Never propose an action outside allowed_actions.";
        let prompt_estimate = (system.len() + facts.to_string().len()) as u64 / 3;
        let worst = self.endpoint.cost(
            prompt_estimate,
            u64::from(self.config.max_completion_tokens),
        );
        if let Err(why) = self.reserve(worst) {
            self.metrics.over_budget();
            advice.usage.used = false;
            advice.usage.discarded.push(format!("not called: {why}"));
            return advice;
        }
        let request = CreateChatCompletionRequestArgs::default()
            .model(&self.config.model)
            .max_completion_tokens(self.config.max_completion_tokens)
            .response_format(ResponseFormat::JsonObject)
            .messages([
                ChatCompletionRequestSystemMessageArgs::default()
                    .content(system)
                    .build()
                    .expect("valid message")
                    .into(),
                ChatCompletionRequestUserMessageArgs::default()
                    .content(facts.to_string())
                    .build()
                    .expect("valid message")
                    .into(),
            ])
            .build()
            .expect("valid request");
        // One bound over the whole exchange: the client retries 429s and 5xx honouring
        // Retry-After, which must not hold the incident beyond the configured timeout.
        let client = self.endpoint.client();
        let started = Instant::now();
        let response =
            match tokio::time::timeout(self.config.timeout, client.chat().create(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => {
                    self.metrics
                        .called(Outcome::Failed, started.elapsed(), 0, 0, 0.0);
                    self.endpoint.settle(worst, 0.0);
                    advice.usage.discarded.push(describe(&err));
                    return advice;
                }
                Err(_) => {
                    self.metrics
                        .called(Outcome::TimedOut, started.elapsed(), 0, 0, 0.0);
                    self.endpoint.settle(worst, 0.0);
                    advice.usage.discarded.push(format!(
                        "discarded: no answer within {:?}",
                        self.config.timeout
                    ));
                    return advice;
                }
            };
        if let Some(usage) = &response.usage {
            advice.usage.prompt_tokens = u64::from(usage.prompt_tokens);
            advice.usage.completion_tokens = u64::from(usage.completion_tokens);
        }
        advice.usage.cost_usd = self
            .endpoint
            .cost(advice.usage.prompt_tokens, advice.usage.completion_tokens);
        self.endpoint.settle(worst, advice.usage.cost_usd);
        let content = response
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default();
        let outcome = match validate(&content, evidence, allowed, may_choose) {
            Ok(reply) => {
                advice.narrative = Some(reply.narrative);
                advice.chosen_action = reply.choose_action;
                Outcome::Accepted
            }
            Err(why) => {
                advice.usage.discarded.push(why);
                Outcome::Rejected
            }
        };
        self.metrics.called(
            outcome,
            started.elapsed(),
            advice.usage.prompt_tokens,
            advice.usage.completion_tokens,
            advice.usage.cost_usd,
        );
        advice
    }
}

/// The first of `cited` that is not evidence the model was given (`exists` says which are):
/// one the model invented. The advisor discards its whole reply for one; the investigator
/// discards the finding or proposal citing it.
pub(crate) fn invented_evidence(cited: &[String], exists: impl Fn(&str) -> bool) -> Option<&str> {
    cited.iter().map(String::as_str).find(|id| !exists(id))
}

fn validate(
    content: &str,
    evidence: &[Evidence],
    allowed: &[ActionKind],
    may_choose: bool,
) -> Result<Reply, String> {
    let reply: Reply = serde_json::from_str(content)
        .map_err(|e| format!("discarded: not the expected JSON ({e})"))?;
    if reply.narrative.trim().is_empty() {
        return Err("discarded: empty narrative".into());
    }
    if let Some(invented) = invented_evidence(&reply.evidence_ids, |id| {
        evidence.iter().any(|e| e.id == id)
    }) {
        return Err(format!(
            "discarded: cites evidence {invented} that does not exist"
        ));
    }
    if let Some(kind) = reply.choose_action {
        if !allowed.contains(&kind) {
            return Err(format!(
                "discarded: chose {kind}, which the runbook section does not allow"
            ));
        }
        if !may_choose {
            return Err(format!(
                "discarded: chose {kind} although the rules were confident"
            ));
        }
    }
    Ok(reply)
}
