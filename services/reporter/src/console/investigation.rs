//! The incident page's investigation section: the investigator's report with every finding's
//! cited tool results, its proposals (planned by the remediator only for an incident it
//! escalated with nothing to do, and then only with a human's approval), the steps it took and
//! what it cost.

use std::fmt::Write;

use opsmesh_proto::investigation::{InvestigationReport, InvestigationStep, ToolEvidence};

use super::html::{esc, proposal, status_badge, time};
use crate::timeline::InvestigationView;

/// Hex digests are shown this long (the full digest is in the title).
const DIGEST_SHOWN: usize = 12;

/// The first [`DIGEST_SHOWN`] characters (a digest off the bus may be anything).
fn shortened(digest: &str) -> &str {
    digest
        .char_indices()
        .nth(DIGEST_SHOWN)
        .map_or(digest, |(end, _)| &digest[..end])
}

pub(super) fn section(view: &InvestigationView) -> String {
    let r = &view.report;
    let mut c = String::new();
    let _ = write!(
        c,
        "<section id=\"investigation\" data-state=\"{state}\" data-stop-reason=\"{stop}\"><h2>Investigation</h2><p class=\"muted\"><code>{id}</code> · {at} · {question}</p><p id=\"investigation-outcome\">{badge} stopped: <strong>{stop}</strong> — {detail}</p>",
        state = esc(&r.state.to_string()),
        stop = esc(&r.stop_reason.to_string()),
        id = esc(&view.investigation_id),
        at = time(Some(view.at)),
        question = esc(&view.question),
        badge = status_badge(&r.state.to_string()),
        detail = esc(&r.stop_detail),
    );
    let _ = write!(
        c,
        "<dl class=\"facts\"><dt>root cause</dt><dd id=\"investigation-root-cause\">{root}</dd><dt>risk</dt><dd id=\"investigation-risk\">{risk}</dd><dt>steps</dt><dd id=\"investigation-steps-count\">{steps}</dd><dt>tokens</dt><dd id=\"investigation-tokens\">{prompt} prompt + {completion} completion</dd><dt>cost</dt><dd id=\"investigation-cost\">${cost:.4}</dd></dl>",
        root = esc(&r.root_cause.to_string()),
        risk = r
            .risk
            .map_or_else(|| "—".into(), |risk| esc(&risk.to_string())),
        steps = r.steps.len(),
        prompt = r.usage.prompt_tokens,
        completion = r.usage.completion_tokens,
        cost = r.usage.cost_usd,
    );
    if let Some(summary) = &r.summary {
        let _ = write!(
            c,
            "<pre class=\"explanation\" id=\"investigation-summary\">{}</pre>",
            esc(summary)
        );
    }
    findings(&mut c, r);
    proposals(&mut c, r);
    if !r.discarded_by_reason.is_empty() {
        c.push_str(
            "<p>Discarded by validation:</p><ul class=\"error\" id=\"investigation-discarded\">",
        );
        for (reason, count) in &r.discarded_by_reason {
            let _ = write!(c, "<li>{}: {count}</li>", esc(reason));
        }
        c.push_str("</ul>");
    }
    steps(&mut c, &r.steps);
    c.push_str("</section>");
    c
}

fn findings(c: &mut String, r: &InvestigationReport) {
    let _ = write!(c, "<h3>Findings ({})</h3>", r.findings.len());
    if r.findings.is_empty() {
        c.push_str("<p class=\"muted\">No finding survived validation.</p>");
        return;
    }
    c.push_str("<ol id=\"investigation-findings\">");
    for finding in &r.findings {
        let _ = write!(c, "<li class=\"finding\"><p>{}</p>", esc(&finding.claim));
        for id in &finding.evidence_ids {
            match r.evidence.iter().find(|e| &e.id == id) {
                Some(evidence) => citation(c, evidence, &r.steps),
                None => {
                    let _ = write!(
                        c,
                        "<p class=\"error\">cites {}, which the report does not hold</p>",
                        esc(id)
                    );
                }
            }
        }
        c.push_str("</li>");
    }
    c.push_str("</ol>");
}

/// One cited tool result: the tool, its arguments (a search's SPL shown as such), the digest
/// of the result the model saw, and the result itself folded away.
fn citation(c: &mut String, evidence: &ToolEvidence, steps: &[InvestigationStep]) {
    let digest = steps
        .iter()
        .find(|s| s.evidence_id.as_deref() == Some(evidence.id.as_str()))
        .and_then(|s| s.result_digest.as_deref())
        .unwrap_or("");
    let arguments = match evidence.arguments.get("spl").and_then(|spl| spl.as_str()) {
        Some(spl) => format!("<pre class=\"spl\"><code>{}</code></pre>", esc(spl)),
        None => format!(
            "<pre class=\"arguments\"><code>{}</code></pre>",
            esc(&serde_json::to_string(&evidence.arguments).unwrap_or_default())
        ),
    };
    let _ = write!(
        c,
        "<div class=\"evidence citation\" id=\"citation-{id}\"><p><strong>{id}</strong> · <code>{tool}</code> · result sha256 <code title=\"{digest}\">{short}</code></p>{arguments}<details><summary>result</summary><pre>{result}</pre></details></div>",
        id = esc(&evidence.id),
        tool = esc(&evidence.tool),
        digest = esc(digest),
        short = esc(shortened(digest)),
        result = esc(&evidence.result),
    );
}

fn proposals(c: &mut String, r: &InvestigationReport) {
    if r.proposed_actions.is_empty() {
        return;
    }
    c.push_str(
        "<h3>Proposed actions (for an incident escalated with nothing to do, the remediator \
         plans them through its runbooks and policy; each waits for a human's approval)</h3>\
         <ul id=\"investigation-actions\">",
    );
    for a in &r.proposed_actions {
        let _ = write!(
            c,
            "<li class=\"proposal\"><span class=\"badge\">needs approval</span> {}</li>",
            proposal(a)
        );
    }
    c.push_str("</ul>");
}

pub(super) fn steps(c: &mut String, steps: &[InvestigationStep]) {
    let _ = write!(c, "<h3>Steps ({})</h3>", steps.len());
    if steps.is_empty() {
        return;
    }
    c.push_str("<table id=\"investigation-steps\"><thead><tr><th>#</th><th>step</th><th>tool</th><th>arguments</th><th>evidence</th><th>result sha256</th><th>tokens</th><th>latency</th><th>cost</th></tr></thead><tbody>");
    for s in steps {
        let digest = s.result_digest.as_deref().unwrap_or("");
        let refused = s
            .refused
            .as_ref()
            .map(|why| format!(" <span class=\"error\">refused: {}</span>", esc(why)))
            .unwrap_or_default();
        let _ = write!(
            c,
            "<tr><td>{step}</td><td>{kind}</td><td><code>{tool}</code>{refused}</td><td><code class=\"arguments\">{arguments}</code></td><td>{evidence}</td><td><code title=\"{digest}\">{short}</code></td><td>{tokens}</td><td>{latency} ms</td><td>${cost:.4}</td></tr>",
            step = s.step,
            kind = esc(&s.kind.to_string()),
            tool = esc(s.tool.as_deref().unwrap_or("")),
            arguments = esc(&s
                .arguments
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default()),
            evidence = esc(s.evidence_id.as_deref().unwrap_or("")),
            digest = esc(digest),
            short = esc(shortened(digest)),
            tokens = s.prompt_tokens + s.completion_tokens,
            latency = s.latency_ms,
            cost = s.cost_usd,
        );
    }
    c.push_str("</tbody></table>");
}
