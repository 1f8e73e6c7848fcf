//! The text `opsmesh investigate` prints: one line per event as it comes, the report at the
//! end, and where an investigation stands.

use std::fmt::Write;

use serde_json::Value;

use opsmesh_proto::investigation::{
    InvestigationEvent, InvestigationReport, InvestigationStep, InvestigationUpdate, StepKind,
    ToolEvidence,
};

use super::standing::Standing;

/// Longest rendering of a tool call's arguments in a line.
const ARGUMENTS_CHARS: usize = 120;

/// The lines one event adds to the progress (a report renders in full).
pub fn event(event: &InvestigationEvent) -> String {
    match &event.update {
        InvestigationUpdate::Status(status) if status.detail.is_empty() => {
            format!("{}\n", status.state)
        }
        InvestigationUpdate::Status(status) => format!("{}: {}\n", status.state, status.detail),
        InvestigationUpdate::Step(s) => step(s),
        InvestigationUpdate::Report(r) => report(r),
    }
}

/// `  step 2  splunk_search spl="…" earliest=-1h → t1  420 ms` (tokens and cost for a model
/// call; the reason for a refused call).
pub fn step(s: &InvestigationStep) -> String {
    let mut line = format!("  step {:<3}", s.step);
    match s.kind {
        StepKind::ModelCall => {
            let _ = write!(
                line,
                "model call  {} prompt + {} completion tokens  ${:.6}",
                s.prompt_tokens, s.completion_tokens, s.cost_usd
            );
        }
        StepKind::ToolCall => {
            line.push_str(s.tool.as_deref().unwrap_or("(no tool)"));
            if let Some(arguments) = s.arguments.as_ref().map(arguments_short) {
                let _ = write!(line, "{arguments}");
            }
            match (&s.refused, &s.evidence_id) {
                (Some(reason), _) => {
                    let _ = write!(line, "  REFUSED: {reason}");
                }
                (None, Some(id)) => {
                    let _ = write!(line, " → {id}");
                }
                (None, None) => {}
            }
        }
    }
    let _ = writeln!(line, "  {} ms", s.latency_ms);
    line
}

/// A tool call's arguments on one line after a space: ` key=value …`, values quoted when
/// they hold spaces, cut to [`ARGUMENTS_CHARS`]; nothing for no arguments.
pub fn arguments_short(arguments: &Value) -> String {
    let text = match arguments {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => scalar(other),
    };
    match text.char_indices().nth(ARGUMENTS_CHARS) {
        _ if text.is_empty() => text,
        Some((cut, _)) => format!(" {}…", &text[..cut]),
        None => format!(" {text}"),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
        other => other.to_string(),
    }
}

/// The report: how it ended, the diagnosis, findings with the tool results they cite,
/// proposals, tokens and cost.
pub fn report(r: &InvestigationReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} ({}): {}", r.state, r.stop_reason, r.stop_detail);
    let risk = r
        .risk
        .map_or_else(|| "-".to_owned(), |risk| risk.to_string());
    let _ = writeln!(out, "root cause: {}   risk: {risk}", r.root_cause);
    if let Some(summary) = &r.summary {
        let _ = writeln!(out, "summary: {summary}");
    }
    if !r.findings.is_empty() {
        out.push_str("findings:\n");
    }
    for finding in &r.findings {
        let _ = writeln!(out, "  - {}", finding.claim);
        for id in &finding.evidence_ids {
            let _ = writeln!(out, "      {}", cited(id, &r.evidence));
        }
    }
    if !r.proposed_actions.is_empty() {
        out.push_str("proposals (advice; the remediator's policy decides):\n");
    }
    for p in &r.proposed_actions {
        let params: Vec<String> = p
            .params
            .iter()
            .map(|(k, v)| format!(" {k}={}", scalar(v)))
            .collect();
        let _ = writeln!(
            out,
            "  - {} {}{} (cites {}): {}",
            p.kind,
            p.target,
            params.concat(),
            p.evidence_ids.join(", "),
            p.rationale
        );
    }
    let model = r.usage.model.as_deref().unwrap_or("-");
    let _ = writeln!(
        out,
        "tokens: {} prompt + {} completion in {} step(s); cost ${:.4} (model {model})",
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.steps.len(),
        r.usage.cost_usd
    );
    if !r.discarded_by_reason.is_empty() {
        let discarded: Vec<String> = r
            .discarded_by_reason
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let _ = writeln!(out, "discarded: {}", discarded.join(", "));
    }
    out
}

/// `t1 splunk_search spl="…"`: an evidence id with the call it names.
fn cited(id: &str, evidence: &[ToolEvidence]) -> String {
    match evidence.iter().find(|e| e.id == id) {
        Some(e) => format!("{id} {}{}", e.tool, arguments_short(&e.arguments)),
        None => format!("{id} (not among the report's evidence)"),
    }
}

/// Where an investigation stands (`--status`), then its report once it ended.
pub fn standing(s: &Standing) -> String {
    let mut out = String::new();
    let _ = write!(out, "{} {}", s.investigation_id, s.state);
    if let Some(detail) = &s.detail {
        let _ = write!(out, ": {detail}");
    }
    out.push('\n');
    if let Some(incident) = &s.incident_id {
        let _ = writeln!(out, "incident: {incident}");
    }
    if let Some(question) = &s.question {
        let _ = writeln!(out, "question: {question}");
    }
    if let Some(namespace) = &s.namespace {
        let _ = writeln!(out, "namespace: {namespace}");
    }
    if let Some(by) = &s.requested_by {
        let _ = writeln!(out, "requested by: {by}");
    }
    if !s.steps.is_empty() {
        let tokens: u64 = s
            .steps
            .iter()
            .map(|st| st.prompt_tokens + st.completion_tokens)
            .sum();
        let cost: f64 = s.steps.iter().map(|st| st.cost_usd).sum();
        let _ = writeln!(
            out,
            "so far: {} step(s), {tokens} tokens, ${cost:.4}",
            s.steps.len()
        );
        s.steps.iter().for_each(|st| out.push_str(&step(st)));
    }
    if let Some(r) = &s.report {
        out.push_str(&report(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use opsmesh_proto::{
        ActionKind, RootCause, Severity,
        diagnosis::{ActionProposal, LlmUsage},
        investigation::{Finding, InvestigationState, StopReason},
    };

    use super::*;

    fn tool_step(refused: Option<&str>) -> InvestigationStep {
        InvestigationStep {
            step: 2,
            kind: StepKind::ToolCall,
            tool: Some("splunk_search".into()),
            arguments: Some(json!({"spl": "index=opsmesh | stats count", "earliest": "-1h"})),
            evidence_id: refused.is_none().then(|| "t1".into()),
            result_digest: None,
            refused: refused.map(Into::into),
            prompt_tokens: 0,
            completion_tokens: 0,
            latency_ms: 420,
            cost_usd: 0.0,
        }
    }

    #[test]
    fn a_tool_step_shows_its_arguments_and_evidence_or_why_it_was_refused() {
        assert_eq!(
            step(&tool_step(None)),
            "  step 2  splunk_search earliest=-1h spl=\"index=opsmesh | stats count\" → t1  420 ms\n"
        );
        assert!(
            step(&tool_step(Some("`delete` is not allowed")))
                .contains("REFUSED: `delete` is not allowed"),
        );
        let long = arguments_short(&json!({"spl": "x".repeat(500)}));
        assert_eq!(long.chars().count(), 1 + ARGUMENTS_CHARS + 1);
        assert_eq!(arguments_short(&json!({})), "");
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_report_cites_the_tool_calls_behind_each_finding() {
        let r = InvestigationReport {
            state: InvestigationState::Completed,
            stop_reason: StopReason::Answered,
            stop_detail: "answered after 3 steps".into(),
            summary: Some("OOMKilled".into()),
            findings: vec![Finding {
                claim: "two OOM kills".into(),
                evidence_ids: vec!["t1".into()],
            }],
            root_cause: RootCause::OomKilled,
            risk: Some(Severity::High),
            proposed_actions: vec![ActionProposal {
                kind: ActionKind::PatchMemoryLimit,
                target: "inferenceservice/ml-team-a/m".into(),
                params: BTreeMap::from([("memory_limit".into(), json!("640Mi"))]),
                evidence_ids: vec!["t1".into()],
                rationale: "peak 480Mi".into(),
            }],
            evidence: vec![ToolEvidence {
                id: "t1".into(),
                tool: "splunk_search".into(),
                arguments: json!({"spl": "index=opsmesh oom"}),
                result: String::new(),
            }],
            steps: vec![tool_step(None)],
            usage: LlmUsage {
                used: true,
                model: Some("m".into()),
                prompt_tokens: 1200,
                completion_tokens: 80,
                cost_usd: 0.0123,
                discarded: vec![],
            },
            discarded_by_reason: BTreeMap::from([("unknown_evidence".into(), 1)]),
        };
        let text = report(&r);
        for expected in [
            "completed (answered): answered after 3 steps\n",
            "root cause: oom_killed   risk: high\n",
            "  - two OOM kills\n      t1 splunk_search spl=\"index=opsmesh oom\"\n",
            "  - patch_memory_limit inferenceservice/ml-team-a/m memory_limit=640Mi (cites t1): peak 480Mi\n",
            "tokens: 1200 prompt + 80 completion in 1 step(s); cost $0.0123 (model m)\n",
            "discarded: unknown_evidence 1\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }
}
