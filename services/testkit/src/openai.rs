//! A scripted OpenAI-compatible chat completions server (`POST /v1/chat/completions`) that
//! plays a conversation turn by turn: tool calls (`finish_reason: "tool_calls"`, ids
//! `call_<n>`, arguments as a JSON string) or a final message, each with the `usage` tokens the
//! script gives. Like the real API it checks the bearer key and that every tool call of the
//! conversation's last assistant turn is answered by a `tool` message (`400` otherwise); a
//! request past the end of the script gets a `500`, so a test sees a model asked more often
//! than it planned. [`ScriptedModel::investigator`] plays any number of investigations at
//! once instead, each from its own conversation (see [`investigator`]).

pub mod investigator;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

/// What the model answers on one turn.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Tool calls: (function name, arguments).
    ToolCalls(Vec<(String, Value)>),
    /// A final message.
    Content(String),
}

#[derive(Debug, Clone)]
pub struct Turn {
    pub reply: Reply,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// How long the server takes to answer.
    pub delay: Duration,
}

impl Turn {
    /// One tool call.
    pub fn call(name: &str, arguments: Value) -> Self {
        Self::calls(&[(name, arguments)])
    }

    /// Several tool calls in one turn.
    pub fn calls(calls: &[(&str, Value)]) -> Self {
        Self::with(Reply::ToolCalls(
            calls
                .iter()
                .map(|(n, a)| ((*n).to_owned(), a.clone()))
                .collect(),
        ))
    }

    /// A final answer (JSON text, or anything else a model might say).
    pub fn answer(content: impl Into<String>) -> Self {
        Self::with(Reply::Content(content.into()))
    }

    fn with(reply: Reply) -> Self {
        Self {
            reply,
            prompt_tokens: 1000,
            completion_tokens: 100,
            delay: Duration::ZERO,
        }
    }

    /// The usage the server reports for this turn.
    pub fn usage(mut self, prompt_tokens: u32, completion_tokens: u32) -> Self {
        self.prompt_tokens = prompt_tokens;
        self.completion_tokens = completion_tokens;
        self
    }

    /// A turn the server answers only after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What the server answers.
enum Script {
    /// These turns, one per request, in order.
    Turns(Vec<Turn>),
    /// Each request's next investigation step, read from its conversation.
    Investigator,
}

struct State {
    key: String,
    script: Script,
    /// Request bodies, in order.
    requests: Vec<Value>,
    /// The `usage` of every answer given, in order: (prompt, completion) tokens.
    usage: Vec<(u32, u32)>,
    next_call: u32,
}

pub struct ScriptedModel {
    state: Arc<Mutex<State>>,
    url: String,
}

fn error(status: u16, message: &str, kind: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
        .json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}}))
}

async fn completions(
    state: web::Data<Mutex<State>>,
    request: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    let (response, delay) = answer(&mut state.lock().unwrap(), &request, body.into_inner());
    tokio::time::sleep(delay).await;
    response
}

/// The answer to one request, and how long to wait before giving it.
fn answer(state: &mut State, request: &HttpRequest, body: Value) -> (HttpResponse, Duration) {
    let now = |response| (response, Duration::ZERO);
    let bearer = format!("Bearer {}", state.key);
    if request
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        != Some(bearer.as_str())
    {
        return now(error(
            401,
            "Incorrect API key provided",
            "invalid_request_error",
        ));
    }
    state.requests.push(body.clone());
    let (Some(model), Some(messages)) = (body["model"].as_str(), body["messages"].as_array())
    else {
        return now(error(
            400,
            "model and messages are required",
            "invalid_request_error",
        ));
    };
    if let Some(missing) = unanswered_call(messages) {
        return now(error(
            400,
            &format!(
                "An assistant message with 'tool_calls' must be followed by tool messages \
                 responding to each 'tool_call_id'. The following tool_call_ids did not have \
                 response messages: {missing}"
            ),
            "invalid_request_error",
        ));
    }
    let turn = match &state.script {
        Script::Turns(turns) => turns.get(state.requests.len() - 1).cloned(),
        Script::Investigator => Some(investigator::next_turn(&body)),
    };
    let Some(turn) = turn else {
        return now(error(500, "the script has no more turns", "server_error"));
    };
    let (message, finish_reason) = match turn.reply {
        Reply::Content(content) => (
            json!({"role": "assistant", "content": content, "refusal": null}),
            "stop",
        ),
        Reply::ToolCalls(calls) => {
            let mut tool_calls = Vec::new();
            for (name, arguments) in calls {
                state.next_call += 1;
                let id = format!("call_{}", state.next_call);
                tool_calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}}));
            }
            (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": tool_calls}),
                "tool_calls",
            )
        }
    };
    state
        .usage
        .push((turn.prompt_tokens, turn.completion_tokens));
    let response = HttpResponse::Ok().json(json!({
        "id": format!("chatcmpl-{}", state.requests.len()),
        "object": "chat.completion",
        "created": 1_763_600_000,
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": null, "message": message}],
        "usage": {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        },
    }));
    (response, turn.delay)
}

/// The first tool call of the conversation's last assistant message that no later `tool`
/// message answers.
fn unanswered_call(messages: &[Value]) -> Option<String> {
    let last = messages.iter().rposition(|m| m["role"] == "assistant")?;
    let answered: Vec<&str> = messages[last + 1..]
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["tool_call_id"].as_str())
        .collect();
    messages[last]["tool_calls"]
        .as_array()?
        .iter()
        .filter_map(|call| call["id"].as_str())
        .find(|id| !answered.contains(id))
        .map(str::to_owned)
}

impl ScriptedModel {
    /// Serves `turns` on a free loopback port, accepting the API key `key`.
    pub async fn start(key: &str, turns: Vec<Turn>) -> Self {
        Self::serve(key, Script::Turns(turns)).await
    }

    /// Serves [`investigator`]'s investigation of whatever incident each conversation is
    /// about, any number of conversations at once, accepting the API key `key`.
    pub async fn investigator(key: &str) -> Self {
        Self::serve(key, Script::Investigator).await
    }

    async fn serve(key: &str, script: Script) -> Self {
        let state = Arc::new(Mutex::new(State {
            key: key.to_owned(),
            script,
            requests: Vec::new(),
            usage: Vec::new(),
            next_call: 0,
        }));
        let data = web::Data::from(state.clone());
        let url = crate::serve_on_loopback("model test server", move |routes| {
            routes
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(8 << 20))
                .route("/v1/chat/completions", web::post().to(completions));
        }) + "/v1";
        Self { state, url }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The API base (`http://127.0.0.1:<port>/v1`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request bodies received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.lock().requests.clone()
    }

    /// The `usage` of every answer given, in order: (prompt, completion) tokens.
    pub fn usage(&self) -> Vec<(u32, u32)> {
        self.lock().usage.clone()
    }

    /// The `tool` messages of request `n` (0-based): (tool_call_id, content).
    pub fn tool_results(&self, n: usize) -> Vec<(String, String)> {
        self.requests()
            .get(n)
            .and_then(|r| r["messages"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| {
                (
                    m["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                    m["content"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}
