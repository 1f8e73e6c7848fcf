//! A deterministic investigator for any incident, played from the conversation alone (so any
//! number run at once): it asks `incident_facts`, then `kubernetes_events` of the incident's
//! namespace when that tool is offered, then answers with a report that keeps the rules' root
//! cause and cites the results it got. It proposes nothing. Usage is counted as a real server
//! would, roughly: a token per four characters of the request, and of the answer.

use serde_json::{Value, json};

use super::{Reply, Turn};

const INCIDENT_FACTS: &str = "incident_facts";
const KUBERNETES_EVENTS: &str = "kubernetes_events";

/// One tool result of the conversation.
struct ToolResult {
    tool: String,
    text: String,
    /// The text parsed (`{"evidence_id": .., "result": ..}`, or `{"error": ..}`); `None`
    /// when it is not JSON: the investigator cuts long results short.
    parsed: Option<Value>,
}

impl ToolResult {
    /// A string at `path` of the parsed result; in a cut result, the first `"key": "…"` of
    /// the path's last key, as a model would still read it.
    fn string(&self, path: &[&str]) -> Option<String> {
        match &self.parsed {
            Some(value) => path
                .iter()
                .fold(value, |v, key| &v[key])
                .as_str()
                .map(str::to_owned),
            None => {
                let key = format!("\"{}\":\"", path.last()?);
                let rest = &self.text[self.text.find(&key)? + key.len()..];
                Some(rest[..rest.find('"')?].to_owned())
            }
        }
    }

    fn evidence_id(&self) -> Option<String> {
        self.string(&["evidence_id"])
    }
}

/// The tool results so far, each with the tool the assistant called for it.
fn tool_results(messages: &[Value]) -> Vec<ToolResult> {
    let mut called: Vec<(&str, &str)> = Vec::new();
    let mut results = Vec::new();
    for message in messages {
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (call["id"].as_str(), call["function"]["name"].as_str())
            {
                called.push((id, name));
            }
        }
        if message["role"] == "tool"
            && let Some((_, tool)) = called
                .iter()
                .find(|(id, _)| message["tool_call_id"].as_str() == Some(id))
        {
            let text = message["content"].as_str().unwrap_or_default().to_owned();
            results.push(ToolResult {
                tool: (*tool).to_owned(),
                parsed: serde_json::from_str(&text).ok(),
                text,
            });
        }
    }
    results
}

/// What the investigation is about: the namespace (the question's, else the facts'), and the
/// rules' diagnosis as `incident_facts` gave it.
#[derive(Default)]
struct Facts {
    namespace: Option<String>,
    root_cause: Option<String>,
    target: Option<String>,
    summary: Option<String>,
}

fn facts(messages: &[Value], result: Option<&ToolResult>) -> Facts {
    let question: Value = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let diagnosis =
        |key: &str| result.and_then(|r| r.string(&["result", "facts", "diagnosis", key]));
    let target = diagnosis("target");
    // `inferenceservice/<namespace>/<name>`
    let target_namespace =
        target
            .as_deref()
            .and_then(|target| match target.split('/').collect::<Vec<_>>()[..] {
                [_, namespace, _] => Some(namespace.to_owned()),
                _ => None,
            });
    Facts {
        namespace: question["namespace"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| result.and_then(|r| r.string(&["result", "namespace"])))
            .or(target_namespace),
        root_cause: diagnosis("root_cause"),
        target,
        summary: diagnosis("summary"),
    }
}

fn offered(body: &Value, tool: &str) -> bool {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["function"]["name"] == tool)
}

/// Tokens for `chars` characters of text, as a BPE tokenizer roughly counts English and JSON.
fn tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

/// The next turn of the investigation the request `body` carries.
pub(super) fn next_turn(body: &Value) -> Turn {
    let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
    let results = tool_results(messages);
    let facts_result = results.iter().find(|r| r.tool == INCIDENT_FACTS);
    let known = facts(messages, facts_result);
    let reply = match (facts_result, &known.namespace) {
        (None, _) if offered(body, INCIDENT_FACTS) => {
            Reply::ToolCalls(vec![(INCIDENT_FACTS.to_owned(), json!({}))])
        }
        (_, Some(namespace))
            if offered(body, KUBERNETES_EVENTS)
                && !results.iter().any(|r| r.tool == KUBERNETES_EVENTS) =>
        {
            Reply::ToolCalls(vec![(
                KUBERNETES_EVENTS.to_owned(),
                json!({"namespace": namespace}),
            )])
        }
        _ => Reply::Content(report(&known, &results).to_string()),
    };
    let answer_chars = match &reply {
        Reply::Content(text) => text.len(),
        Reply::ToolCalls(calls) => calls
            .iter()
            .map(|(name, arguments)| name.len() + arguments.to_string().len())
            .sum(),
    };
    let request_chars = body["messages"].to_string().len() + body["tools"].to_string().len();
    Turn::with(reply).usage(tokens(request_chars), tokens(answer_chars))
}

/// The final answer: the rules' root cause, one finding per result that ran, citing it.
fn report(facts: &Facts, results: &[ToolResult]) -> Value {
    let root_cause = facts.root_cause.as_deref().unwrap_or("unknown");
    let target = facts.target.as_deref().unwrap_or("the alert's target");
    let findings: Vec<Value> = results
        .iter()
        .filter_map(|r| {
            let id = r.evidence_id()?;
            let claim = match r.tool.as_str() {
                INCIDENT_FACTS => format!(
                    "opsmesh's rules diagnosed {root_cause} on {target}: {}",
                    facts.summary.as_deref().unwrap_or("no summary")
                ),
                KUBERNETES_EVENTS => {
                    let events = r
                        .parsed
                        .as_ref()
                        .and_then(|p| p["result"]["events"].as_array())
                        .map_or(&[][..], Vec::as_slice);
                    let reasons: Vec<&str> =
                        events.iter().filter_map(|e| e["reason"].as_str()).collect();
                    format!(
                        "the namespace has {} event(s){}",
                        events.len(),
                        match reasons.last() {
                            Some(reason) => format!(", the latest {reason}"),
                            None => String::new(),
                        }
                    )
                }
                other => format!("{other} answered"),
            };
            Some(json!({"claim": claim, "evidence_ids": [id]}))
        })
        .collect();
    json!({
        "summary": format!("{root_cause} on {target}, as the rules found; the events agree"),
        "root_cause": root_cause,
        "risk": "medium",
        "findings": findings,
        "proposed_actions": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(names: &[&str]) -> Value {
        names
            .iter()
            .map(|n| json!({"type": "function", "function": {"name": n}}))
            .collect()
    }

    /// The conversation after the assistant called `tool` (as `id`) and got `result`.
    fn answered(mut messages: Vec<Value>, id: &str, tool: &str, result: Value) -> Vec<Value> {
        messages.push(json!({"role": "assistant", "tool_calls": [
            {"id": id, "type": "function", "function": {"name": tool, "arguments": "{}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": result.to_string()}));
        messages
    }

    fn calls(turn: &Turn) -> Vec<(String, Value)> {
        match &turn.reply {
            Reply::ToolCalls(calls) => calls.clone(),
            Reply::Content(text) => panic!("answered {text}"),
        }
    }

    #[test]
    fn facts_then_the_namespace_events_then_a_report_citing_both() {
        let tools = tools(&[KUBERNETES_EVENTS, INCIDENT_FACTS]);
        let opening = vec![
            json!({"role": "system", "content": "You are opsmesh's investigator"}),
            json!({"role": "user", "content": "why?"}),
        ];
        let first = next_turn(&json!({"messages": opening, "tools": tools}));
        assert_eq!(calls(&first), [(INCIDENT_FACTS.to_owned(), json!({}))]);
        assert!(first.prompt_tokens > 1 && first.completion_tokens > 1);

        let facts = json!({"evidence_id": "t1", "result": {"incident_id": "inc-1", "namespace": null,
            "facts": {"diagnosis": {"root_cause": "crash_loop", "summary": "crashes on start",
                                    "target": "inferenceservice/ml-team-a/embedder"}}}});
        let messages = answered(opening, "call_1", INCIDENT_FACTS, facts);
        let second = next_turn(&json!({"messages": messages, "tools": tools}));
        assert_eq!(
            calls(&second),
            [(
                KUBERNETES_EVENTS.to_owned(),
                json!({"namespace": "ml-team-a"})
            )]
        );

        let events = json!({"evidence_id": "t2", "result": {"namespace": "ml-team-a",
            "events": [{"reason": "Pulled"}, {"reason": "BackOff"}]}});
        let messages = answered(messages, "call_2", KUBERNETES_EVENTS, events);
        let last = next_turn(&json!({"messages": messages, "tools": tools}));
        let Reply::Content(text) = &last.reply else {
            panic!("not a report")
        };
        let report: Value = serde_json::from_str(text).unwrap();
        assert_eq!(report["root_cause"], "crash_loop");
        assert_eq!(report["findings"][0]["evidence_ids"], json!(["t1"]));
        assert_eq!(report["findings"][1]["evidence_ids"], json!(["t2"]));
        assert!(
            report["findings"][1]["claim"]
                .as_str()
                .unwrap()
                .contains("2 event(s), the latest BackOff")
        );
    }

    #[test]
    fn a_result_cut_short_is_still_read_and_the_question_names_the_namespace() {
        let tools = tools(&[KUBERNETES_EVENTS, INCIDENT_FACTS]);
        let question =
            json!({"question": "why?", "incident_id": "inc-1", "namespace": "ml-team-b"});
        let opening = vec![json!({"role": "user", "content": question.to_string()})];
        let facts = json!({"evidence_id": "t1", "result": {"facts": {"diagnosis": {
            "root_cause": "canary_regression", "summary": "the canary fails",
            "explanation": "x".repeat(100)}}}})
        .to_string();
        let end = facts.find("\"summary\"").unwrap() + 5;
        let cut = format!("{}…[truncated: 9000 more characters]", &facts[..end]);
        let mut messages = answered(opening, "call_1", INCIDENT_FACTS, json!(null));
        messages[2]["content"] = json!(cut);
        let turn = next_turn(&json!({"messages": messages, "tools": tools}));
        assert_eq!(
            calls(&turn),
            [(
                KUBERNETES_EVENTS.to_owned(),
                json!({"namespace": "ml-team-b"})
            )]
        );
        let messages = answered(
            messages,
            "call_2",
            KUBERNETES_EVENTS,
            json!({"error": "down"}),
        );
        let Reply::Content(text) = next_turn(&json!({"messages": messages, "tools": tools})).reply
        else {
            panic!("not a report")
        };
        let report: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["root_cause"], "canary_regression");
        assert_eq!(report["findings"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["findings"][0]["evidence_ids"], json!(["t1"]));
    }

    #[test]
    fn without_the_kubernetes_tools_it_answers_from_the_facts() {
        let tools = tools(&[INCIDENT_FACTS]);
        let facts = json!({"evidence_id": "t1", "result": {"namespace": "ml-team-a",
            "facts": {"diagnosis": {"root_cause": "unknown"}}}});
        let messages = answered(vec![], "call_1", INCIDENT_FACTS, facts);
        let turn = next_turn(&json!({"messages": messages, "tools": tools}));
        let Reply::Content(text) = &turn.reply else {
            panic!("not a report")
        };
        let report: Value = serde_json::from_str(text).unwrap();
        assert_eq!(report["root_cause"], "unknown");
        assert_eq!(report["findings"].as_array().unwrap().len(), 1);
    }
}
