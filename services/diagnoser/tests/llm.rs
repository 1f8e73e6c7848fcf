//! The optional LLM advisor against an OpenAI-compatible test server: valid advice, a
//! hallucinated action, invented evidence, malformed JSON, timeouts, 429s and budgets.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

mod support;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{Value, json};

use opsmesh_diagnoser::llm::{Advisor, LlmConfig};
use opsmesh_proto::{
    ActionKind,
    diagnosis::{Evidence, EvidenceSource},
};

const KEY: &str = "sk-test-key";

/// What the test server answers next.
#[derive(Clone)]
enum Script {
    Content(String),
    Slow,
    RateLimited,
}

struct Server {
    script: Mutex<Script>,
    requests: Mutex<Vec<Value>>,
}

async fn completions(
    state: web::Data<Server>,
    request: HttpRequest,
    body: web::Json<Value>,
) -> HttpResponse {
    if request
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {KEY}"))
    {
        return HttpResponse::Unauthorized().json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}));
    }
    state.requests.lock().unwrap().push(body.into_inner());
    let script = state.script.lock().unwrap().clone();
    match script {
        Script::RateLimited => HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "0"))
            .json(json!({"error": {"message": "Rate limit reached for requests", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})),
        Script::Slow => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            HttpResponse::Ok().finish()
        }
        Script::Content(content) => HttpResponse::Ok().json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_763_600_000, "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                         "message": {"role": "assistant", "content": content, "refusal": null}}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 150, "total_tokens": 1350}
        })),
    }
}

async fn start(script: Script) -> (String, Arc<Server>) {
    let state = Arc::new(Server {
        script: Mutex::new(script),
        requests: Mutex::new(Vec::new()),
    });
    let data = web::Data::from(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/v1/chat/completions", web::post().to(completions))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (url, state)
}

fn advisor(url: &str, adjust: impl FnOnce(&mut LlmConfig)) -> Advisor {
    advisor_in(&Registry::new(), url, adjust)
}

/// An advisor whose metrics are registered in `registry`.
fn advisor_in(registry: &Registry, url: &str, adjust: impl FnOnce(&mut LlmConfig)) -> Advisor {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, KEY).unwrap();
    let mut config = LlmConfig {
        enabled: true,
        base_url: url.into(),
        api_key_file: Some(key),
        model: "test-model".into(),
        timeout: Duration::from_secs(1),
        ..LlmConfig::default()
    };
    adjust(&mut config);
    Advisor::new(&config, registry).unwrap().expect("enabled")
}

fn evidence() -> Vec<Evidence> {
    ["ev1", "ev2"]
        .iter()
        .map(|id| Evidence {
            id: id.to_string(),
            source: EvidenceSource::Telemetry,
            query: "q".into(),
            earliest: None,
            latest: None,
            row_count: 1,
            values: BTreeMap::new(),
            error: None,
        })
        .collect()
}

const ALLOWED: &[ActionKind] = &[ActionKind::PatchMemoryLimit, ActionKind::Escalate];

fn reply(value: Value) -> Script {
    Script::Content(value.to_string())
}

#[tokio::test]
async fn valid_advice_is_kept_and_costed() {
    let (url, server) = start(reply(json!({"narrative": "OOMKilled twice (ev1); limit below the peak (ev2).", "evidence_ids": ["ev1", "ev2"], "choose_action": "patch_memory_limit"}))).await;
    let advice = advisor(&url, |_| {})
        .advise("summary", &evidence(), ALLOWED, true)
        .await;
    assert_eq!(
        advice.narrative.as_deref(),
        Some("OOMKilled twice (ev1); limit below the peak (ev2).")
    );
    assert_eq!(advice.chosen_action, Some(ActionKind::PatchMemoryLimit));
    assert_eq!(
        (advice.usage.prompt_tokens, advice.usage.completion_tokens),
        (1200, 150)
    );
    // 1200 × $0.15/M + 150 × $0.60/M
    assert!(
        (advice.usage.cost_usd - 0.00027).abs() < 1e-9,
        "{}",
        advice.usage.cost_usd
    );
    assert!(advice.usage.discarded.is_empty());
    let request = &server.requests.lock().unwrap()[0];
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["response_format"]["type"], "json_object");
}

/// The value of the sample `series` (name and labels as exposed) in `registry`.
fn sample(registry: &Registry, series: &str) -> f64 {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    let prefix = format!("{series} ");
    String::from_utf8(text)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

#[tokio::test]
async fn calls_by_outcome_tokens_and_cost_are_on_the_metrics() {
    let (url, server) = start(reply(
        json!({"narrative": "OOMKilled (ev1).", "evidence_ids": ["ev1"]}),
    ))
    .await;
    let registry = Registry::new();
    // An hourly budget for two calls: the third is not made.
    let advisor = advisor_in(&registry, &url, |c| c.budget_per_hour_usd = 0.0008);
    assert!(
        advisor
            .advise("s", &evidence(), ALLOWED, false)
            .await
            .narrative
            .is_some()
    );
    *server.script.lock().unwrap() =
        reply(json!({"narrative": "see ev7", "evidence_ids": ["ev7"]}));
    assert!(
        advisor
            .advise("s", &evidence(), ALLOWED, false)
            .await
            .narrative
            .is_none()
    );
    let third = advisor.advise("s", &evidence(), ALLOWED, false).await;
    assert!(!third.usage.used, "{:?}", third.usage.discarded);

    let calls = |outcome: &str| {
        sample(
            &registry,
            &format!("diagnoser_llm_calls_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        (
            calls("accepted"),
            calls("rejected"),
            calls("over_budget"),
            calls("failed")
        ),
        (1.0, 1.0, 1.0, 0.0)
    );
    assert_eq!(
        sample(&registry, "diagnoser_llm_tokens_total{kind=\"prompt\"}"),
        2400.0
    );
    assert_eq!(
        sample(&registry, "diagnoser_llm_tokens_total{kind=\"completion\"}"),
        300.0
    );
    // 2 × (1200 × $0.15/M + 150 × $0.60/M)
    let cost = sample(&registry, "diagnoser_llm_cost_usd_total");
    assert!((cost - 0.00054).abs() < 1e-9, "{cost}");
    assert_eq!(
        sample(
            &registry,
            "diagnoser_llm_call_seconds_count{outcome=\"accepted\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_hallucinated_action_is_discarded() {
    let (url, _) = start(reply(json!({"narrative": "restart it", "evidence_ids": ["ev1"], "choose_action": "restart_inference_service"}))).await;
    let advice = advisor(&url, |_| {})
        .advise("s", &evidence(), ALLOWED, true)
        .await;
    assert!(advice.narrative.is_none() && advice.chosen_action.is_none());
    assert!(
        advice.usage.discarded[0]
            .contains("restart_inference_service, which the runbook section does not allow"),
        "{:?}",
        advice.usage.discarded
    );
    assert!(
        advice.usage.cost_usd > 0.0,
        "tokens spent are still counted"
    );
}

#[tokio::test]
async fn invented_evidence_is_discarded() {
    let (url, _) = start(reply(
        json!({"narrative": "see ev7", "evidence_ids": ["ev7"]}),
    ))
    .await;
    let advice = advisor(&url, |_| {})
        .advise("s", &evidence(), ALLOWED, false)
        .await;
    assert!(advice.narrative.is_none());
    assert!(
        advice.usage.discarded[0].contains("evidence ev7 that does not exist"),
        "{:?}",
        advice.usage.discarded
    );
}

#[tokio::test]
async fn a_choice_when_the_rules_are_confident_is_discarded() {
    let (url, _) = start(reply(
        json!({"narrative": "x (ev1)", "evidence_ids": ["ev1"], "choose_action": "escalate"}),
    ))
    .await;
    let advice = advisor(&url, |_| {})
        .advise("s", &evidence(), ALLOWED, false)
        .await;
    assert!(advice.chosen_action.is_none());
    assert!(
        advice.usage.discarded[0].contains("rules were confident"),
        "{:?}",
        advice.usage.discarded
    );
}

#[tokio::test]
async fn malformed_json_is_discarded() {
    let (url, _) = start(Script::Content(
        "Sure! Here is the JSON: {narrative: oops".into(),
    ))
    .await;
    let advice = advisor(&url, |_| {})
        .advise("s", &evidence(), ALLOWED, false)
        .await;
    assert!(advice.narrative.is_none());
    assert!(
        advice.usage.discarded[0].starts_with("discarded: not the expected JSON"),
        "{:?}",
        advice.usage.discarded
    );
}

#[tokio::test]
async fn timeouts_and_429s_are_recorded_not_fatal() {
    let (url, server) = start(Script::Slow).await;
    let slow = advisor(&url, |_| {})
        .advise("s", &evidence(), ALLOWED, false)
        .await;
    assert!(
        slow.usage.discarded[0].contains("timed out")
            || slow.usage.discarded[0].contains("no answer within"),
        "{:?}",
        slow.usage.discarded
    );
    *server.script.lock().unwrap() = Script::RateLimited;
    let limited = advisor(&url, |_| {})
        .advise("s", &evidence(), ALLOWED, false)
        .await;
    assert!(
        limited.usage.discarded[0].contains("429"),
        "{:?}",
        limited.usage.discarded
    );
    assert_eq!(limited.usage.cost_usd, 0.0);
}

#[tokio::test]
async fn budgets_are_hard_caps() {
    let (url, server) = start(reply(
        json!({"narrative": "n (ev1)", "evidence_ids": ["ev1"]}),
    ))
    .await;
    let per_incident = advisor(&url, |c| c.budget_per_incident_usd = 0.000_01)
        .advise("s", &evidence(), ALLOWED, false)
        .await;
    assert!(!per_incident.usage.used);
    assert!(
        per_incident.usage.discarded[0].contains("per-incident budget"),
        "{:?}",
        per_incident.usage.discarded
    );
    // An hourly budget for about one call: the second is not made.
    let hourly = advisor(&url, |c| c.budget_per_hour_usd = 0.0006);
    assert!(
        hourly
            .advise("s", &evidence(), ALLOWED, false)
            .await
            .narrative
            .is_some()
    );
    let second = hourly.advise("s", &evidence(), ALLOWED, false).await;
    assert!(
        second.usage.discarded[0].contains("hourly budget"),
        "{:?}",
        second.usage.discarded
    );
    assert_eq!(
        server.requests.lock().unwrap().len(),
        1,
        "no call over budget"
    );
}

#[tokio::test]
async fn with_the_llm_the_diagnosis_differs_only_by_its_narrative() {
    let (url, _) = start(reply(
        json!({"narrative": "The model ran out of memory (ev1).", "evidence_ids": ["ev1"]}),
    ))
    .await;
    let mut results = Vec::new();
    for advisor in [None, Some(advisor(&url, |_| {}))] {
        let running = support::start_with(support::quick(), advisor).await;
        support::publish_oom_telemetry(&running.ctx, "gpt-oss-120b").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let envelope = opsmesh_proto::Envelope::new(
            "test",
            "default",
            Some("fp-gpt-oss-120b".into()),
            support::alert("gpt-oss-120b"),
        );
        running
            .ctx
            .publisher
            .publish("fp-gpt-oss-120b", &envelope)
            .await
            .unwrap();
        results.push(support::diagnoses(&running.bus, 1).await.remove(0).payload);
    }
    let (off, on) = (&results[0], &results[1]);
    assert!(off.narrative.is_none() && !off.llm.used);
    assert_eq!(
        on.narrative.as_deref(),
        Some("The model ran out of memory (ev1).")
    );
    assert!(on.llm.used && on.llm.cost_usd > 0.0);
    let strip = |d: &opsmesh_proto::diagnosis::Diagnosis| {
        let mut v = serde_json::to_value(d).unwrap();
        for key in ["narrative", "llm", "alert_ids"] {
            v.as_object_mut().unwrap().remove(key);
        }
        // Evidence records carry observation times: compare what they say, not when.
        for e in v["evidence"].as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("query");
        }
        v
    };
    assert_eq!(strip(off), strip(on));
}
