//! Server-rendered pages. Everything interpolated is escaped with [`esc`].

use std::fmt::Write;

use chrono::{DateTime, Utc};

use opsmesh_proto::diagnosis::{ActionProposal, LlmUsage};

use super::filter::{self, FilterError};
use crate::timeline::{ChainStatus, IncidentDetail, IncidentSummary, PendingApproval};

pub const SCRIPT: &str = include_str!("console.js");
pub const STYLE: &str = include_str!("console.css");
pub const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><circle cx=\"8\" cy=\"8\" r=\"7\" fill=\"#2563eb\"/></svg>";

/// What every signed-in page shows around its content.
pub struct Chrome {
    pub user: String,
    pub csrf: String,
    pub can_sign_out: bool,
    /// Approver: the approve and reject buttons are shown.
    pub can_decide: bool,
    /// The investigate button and the question form are shown.
    pub can_investigate: bool,
}

/// HTML-escapes text for element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (path segments, query values).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "—".into(),
        |t| esc(&t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
    )
}

fn duration(secs: Option<f64>) -> String {
    match secs {
        None => "—".into(),
        Some(s) if s < 120.0 => format!("{s:.1} s"),
        Some(s) if s < 7200.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

pub(super) fn status_badge(status: &str) -> String {
    format!(
        "<span class=\"badge status-{0}\" data-status=\"{0}\">{0}</span>",
        esc(status)
    )
}

fn chain_badge(status: ChainStatus) -> String {
    let (class, text) = match status {
        ChainStatus::Empty => ("chain-empty", "no records"),
        ChainStatus::Intact => ("chain-intact", "intact"),
        ChainStatus::Broken => ("chain-broken", "BROKEN"),
    };
    format!("<span class=\"badge {class}\" data-chain=\"{text}\">{text}</span>")
}

pub(super) fn layout(
    title: &str,
    chrome: Option<&Chrome>,
    body_attrs: &str,
    content: &str,
) -> String {
    let header = match chrome {
        Some(chrome) => {
            let sign_out = if chrome.can_sign_out {
                format!(
                    "<form method=\"post\" action=\"/console/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"link\">sign out</button></form>",
                    esc(&chrome.csrf)
                )
            } else {
                String::new()
            };
            format!(
                "<header><a class=\"brand\" href=\"/console/incidents\">opsmesh</a><nav><a href=\"/console/incidents\">Incidents</a> <a href=\"/console/investigations\">Investigations</a></nav><span class=\"live\" id=\"live\" title=\"live updates\">●</span><span class=\"user\" id=\"user\">{}</span>{sign_out}</header>",
                esc(&chrome.user)
            )
        }
        None => "<header><span class=\"brand\">opsmesh</span></header>".into(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · opsmesh</title><link rel=\"icon\" href=\"/console/static/favicon.svg\" type=\"image/svg+xml\"><link rel=\"stylesheet\" href=\"/console/static/console.css\"><script src=\"/console/static/console.js\" defer></script></head><body{body_attrs}>{header}<main id=\"main\">{content}</main></body></html>\n",
        esc(title)
    )
}

pub fn login(next: &str, failed: bool, tokens: bool, proxy_header: Option<&str>) -> String {
    let mut content = String::from("<h1>Sign in</h1>");
    if failed {
        content.push_str("<p class=\"error\" id=\"login-error\">That token is not valid.</p>");
    }
    if tokens {
        let _ = write!(
            content,
            "<form method=\"post\" action=\"/console/login\" class=\"login\"><input type=\"hidden\" name=\"next\" value=\"{}\"><label>Access token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label><button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
            esc(next)
        );
    }
    if let Some(header) = proxy_header {
        let _ = write!(
            content,
            "<p>This console also accepts users signed in by the authenticating proxy (header <code>{}</code>).</p>",
            esc(header)
        );
    }
    layout("Sign in", None, "", &content)
}

pub fn message(chrome: &Chrome, title: &str, text: &str) -> String {
    let content = format!(
        "<h1>{}</h1><p class=\"error\" id=\"message\">{}</p><p><a href=\"/console/incidents\">All incidents</a></p>",
        esc(title),
        esc(text)
    );
    layout(title, Some(chrome), "", &content)
}

fn approval_form(chrome: &Chrome, p: &PendingApproval) -> String {
    let params = serde_json::to_string(&p.params).unwrap_or_default();
    let mut out = format!(
        "<div class=\"approval\" data-key=\"{key}\"><p><strong>{kind}</strong> on <code>{target}</code> <code class=\"params\">{params}</code></p><p>{reason}</p>",
        key = esc(&p.idempotency_key),
        kind = esc(&p.kind.to_string()),
        target = esc(&p.target),
        params = esc(&params),
        reason = esc(&p.reason),
    );
    if let Some(effect) = &p.projected_effect {
        let _ = write!(out, "<p>Projected effect: {}</p>", esc(effect));
    }
    match &p.decided {
        Some(d) => {
            let _ = write!(
                out,
                "<p class=\"decided\" id=\"decided\">{} by {} at {} — waiting for the remediator.</p>",
                match d.decision {
                    opsmesh_proto::approval::ApprovalDecision::Approve => "Approved",
                    opsmesh_proto::approval::ApprovalDecision::Reject => "Rejected",
                },
                esc(&d.approver),
                time(Some(d.at))
            );
        }
        None if !chrome.can_decide => {
            let _ = write!(
                out,
                "<p class=\"viewer\" id=\"viewer-only\">Awaiting a decision. You ({}) are a viewer: approving or rejecting needs the approver role.</p>",
                esc(&chrome.user)
            );
        }
        None => {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/console/incidents/{id}/decision\" class=\"decide\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"idempotency_key\" value=\"{key}\"><label>Comment <input type=\"text\" name=\"comment\" maxlength=\"2000\"></label><button type=\"submit\" name=\"decision\" value=\"approve\" class=\"approve\" id=\"approve\">Approve</button><button type=\"submit\" name=\"decision\" value=\"reject\" class=\"reject\" id=\"reject\">Reject</button><span class=\"as\">as {user}</span></form>",
                id = esc(&url_encode(&p.incident_id)),
                csrf = esc(&chrome.csrf),
                key = esc(&p.idempotency_key),
                user = esc(&chrome.user),
            );
        }
    }
    out.push_str("</div>");
    out
}

/// The incident list: the incidents the filters let through, or why the filters were refused.
pub enum List {
    Shown(Vec<IncidentSummary>),
    Refused(FilterError),
}

/// The filter form, showing back what was `given`.
fn filter_form(given: &[(String, String)], namespaces: &[String]) -> String {
    let value = |param: &str| {
        given
            .iter()
            .find(|(p, _)| p == param)
            .map_or("", |(_, v)| v.as_str())
    };
    let mut states = String::from("<option value=\"\">any</option>");
    for state in filter::statuses() {
        let selected = if value("state") == state {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            states,
            "<option value=\"{0}\"{selected}>{0}</option>",
            esc(&state)
        );
    }
    let mut known = String::new();
    for namespace in namespaces {
        let _ = write!(known, "<option value=\"{}\">", esc(namespace));
    }
    format!(
        "<form method=\"get\" action=\"/console/incidents\" id=\"filters\" class=\"filters\"><label>State <select name=\"state\" id=\"filter-state\">{states}</select></label><label>Namespace <input type=\"text\" name=\"namespace\" id=\"filter-namespace\" list=\"namespaces\" maxlength=\"63\" value=\"{namespace}\"></label><datalist id=\"namespaces\">{known}</datalist><label>Opened since <input type=\"text\" name=\"since\" id=\"filter-since\" placeholder=\"24h or 2026-01-31T08:00:00Z\" maxlength=\"64\" value=\"{since}\"></label><label>until <input type=\"text\" name=\"until\" id=\"filter-until\" placeholder=\"now\" maxlength=\"64\" value=\"{until}\"></label><button type=\"submit\" id=\"apply-filters\">Filter</button> <a href=\"/console/incidents\" id=\"clear-filters\">clear</a></form>",
        namespace = esc(value("namespace")),
        since = esc(value("since")),
        until = esc(value("until")),
    )
}

pub fn incidents(
    chrome: &Chrome,
    list: &List,
    given: &[(String, String)],
    pending: &[PendingApproval],
) -> String {
    let mut content = String::from("<h1>Incidents</h1>");
    let _ = write!(
        content,
        "<section id=\"pending\"><h2>Pending approvals ({})</h2>",
        pending.len()
    );
    if pending.is_empty() {
        content.push_str("<p class=\"muted\">Nothing awaits approval.</p>");
    } else {
        content.push_str("<table><thead><tr><th>incident</th><th>action</th><th>target</th><th>root cause</th><th>requested</th></tr></thead><tbody>");
        for p in pending {
            let _ = write!(
                content,
                "<tr class=\"pending-row\"><td><a href=\"/console/incidents/{}\">{}</a></td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&url_encode(&p.incident_id)),
                esc(&p.incident_id),
                esc(&p.kind.to_string()),
                esc(&p.target),
                p.root_cause
                    .map(|c| esc(&c.to_string()))
                    .unwrap_or_default(),
                time(Some(p.requested_at)),
            );
        }
        content.push_str("</tbody></table>");
    }
    let filtered = given.iter().any(|(_, v)| !v.trim().is_empty());
    let incidents = match list {
        List::Shown(incidents) => incidents.as_slice(),
        List::Refused(_) => &[],
    };
    let mut namespaces: Vec<String> = incidents
        .iter()
        .filter_map(|i| i.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let _ = write!(
        content,
        "</section><section id=\"incidents\"><h2>{} ({})</h2>{}",
        if filtered {
            "Matching incidents"
        } else {
            "All incidents"
        },
        incidents.len(),
        filter_form(given, &namespaces)
    );
    if let List::Refused(err) = list {
        let _ = write!(
            content,
            "<p class=\"error\" id=\"filter-error\">{}</p>",
            esc(&err.to_string())
        );
    } else if incidents.is_empty() {
        content.push_str(if filtered {
            "<p class=\"muted\" id=\"no-match\">No incident matches these filters.</p>"
        } else {
            "<p class=\"muted\">No incidents yet.</p>"
        });
    } else {
        content.push_str("<table><thead><tr><th>incident</th><th>status</th><th>root cause</th><th>summary</th><th>namespace</th><th>target</th><th>severity</th><th>opened</th><th>time to outcome</th><th>audit chain</th></tr></thead><tbody>");
        for i in incidents {
            let _ = write!(
                content,
                "<tr class=\"incident-row\" data-incident=\"{id}\"><td><a href=\"/console/incidents/{link}\">{id}</a></td><td>{status}</td><td>{cause}</td><td>{summary}</td><td class=\"namespace\">{namespace}</td><td><code>{target}</code></td><td>{severity}</td><td>{opened}</td><td>{tto}</td><td>{chain}</td></tr>",
                id = esc(&i.id),
                link = esc(&url_encode(&i.id)),
                status = status_badge(&i.status),
                cause = i
                    .root_cause
                    .map(|c| esc(&c.to_string()))
                    .unwrap_or_else(|| "—".into()),
                summary = esc(i.summary.as_deref().unwrap_or("")),
                namespace = esc(i.namespace.as_deref().unwrap_or("")),
                target = esc(i.target.as_deref().unwrap_or("")),
                severity = i.severity.map(|s| esc(&s.to_string())).unwrap_or_default(),
                opened = time(i.opened_at),
                tto = duration(i.time_to_outcome_seconds),
                chain = chain_badge(i.audit_chain),
            );
        }
        content.push_str("</tbody></table>");
    }
    content.push_str("</section>");
    layout(
        "Incidents",
        Some(chrome),
        " data-page=\"incidents\"",
        &content,
    )
}

pub fn incident(
    chrome: &Chrome,
    d: &IncidentDetail,
    decided: Option<&str>,
    investigating: Option<&str>,
) -> String {
    let s = &d.summary;
    let mut c = String::new();
    let _ = write!(
        c,
        "<h1>Incident <code>{}</code> {}</h1>",
        esc(&s.id),
        status_badge(&s.status)
    );
    if let Some(decided) = decided {
        let _ = write!(
            c,
            "<p class=\"notice\" id=\"notice\">Your decision ({}) was published to opsmesh.approvals.v1.</p>",
            esc(decided)
        );
    }
    let _ = write!(
        c,
        "<dl class=\"facts\"><dt>root cause</dt><dd id=\"root-cause\">{}</dd><dt>summary</dt><dd>{}</dd><dt>target</dt><dd><code>{}</code></dd><dt>cluster</dt><dd>{}</dd><dt>severity</dt><dd>{}</dd><dt>opened</dt><dd>{}</dd><dt>time to outcome</dt><dd>{}</dd><dt>audit chain</dt><dd id=\"audit-chain\">{} ({} records)</dd></dl>",
        s.root_cause
            .map(|c| esc(&c.to_string()))
            .unwrap_or_else(|| "—".into()),
        esc(s.summary.as_deref().unwrap_or("")),
        esc(s.target.as_deref().unwrap_or("")),
        esc(&s.cluster),
        s.severity.map(|v| esc(&v.to_string())).unwrap_or_default(),
        time(s.opened_at),
        duration(s.time_to_outcome_seconds),
        chain_badge(d.audit_chain.status),
        d.audit_chain.records,
    );

    if let Some(p) = &d.pending_approval {
        c.push_str("<section id=\"approval\"><h2>Awaiting approval</h2>");
        c.push_str(&approval_form(chrome, p));
        c.push_str("</section>");
    }

    c.push_str("<section id=\"reasoning\"><h2>Reasoning chain</h2>");
    // 1. Alerts
    let _ = write!(c, "<h3>1. Alerts ({})</h3>", s.alert_count);
    if d.alerts.is_empty() {
        c.push_str("<p class=\"muted\">No alert in this reporter's timeline.</p>");
    } else {
        c.push_str("<table><thead><tr><th>received</th><th>alert</th><th>severity</th><th>status</th><th>entity</th><th>rows</th><th>Splunk</th></tr></thead><tbody>");
        for a in &d.alerts {
            let link = a
                .results_link
                .as_deref()
                .filter(|l| l.starts_with("https://") || l.starts_with("http://"))
                .map(|l| format!("<a href=\"{}\" rel=\"noreferrer\">results</a>", esc(l)))
                .unwrap_or_default();
            let _ = write!(
                c,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{link} <code>{}</code></td></tr>",
                time(Some(a.received_at)),
                esc(&a.name),
                esc(&a.severity.to_string()),
                esc(&a.status),
                esc(a.entity.as_deref().unwrap_or("")),
                a.rows,
                esc(a.sid.as_deref().unwrap_or("")),
            );
        }
        c.push_str("</tbody></table>");
    }
    // 2. Evidence
    let _ = write!(c, "<h3>2. Evidence ({})</h3>", d.evidence.len());
    if d.evidence.is_empty() {
        c.push_str("<p class=\"muted\">No evidence (no diagnosis yet).</p>");
    }
    for e in &d.evidence {
        let values = serde_json::to_string_pretty(&e.values).unwrap_or_default();
        let source = serde_json::to_value(e.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = write!(
            c,
            "<div class=\"evidence\" id=\"evidence-{id}\"><p><strong>{id}</strong> · {source} · {rows} rows{window}</p><pre class=\"spl\"><code>{query}</code></pre>{error}<details><summary>values used</summary><pre>{values}</pre></details></div>",
            id = esc(&e.id),
            source = esc(&source),
            rows = e.row_count,
            window = match (&e.earliest, &e.latest) {
                (None, None) => String::new(),
                (earliest, latest) => format!(
                    " · {} → {}",
                    esc(earliest.as_deref().unwrap_or("")),
                    esc(latest.as_deref().unwrap_or("now"))
                ),
            },
            query = esc(&e.query),
            error = e
                .error
                .as_ref()
                .map(|err| format!("<p class=\"error\">degraded: {}</p>", esc(err)))
                .unwrap_or_default(),
            values = esc(&values),
        );
    }
    // 3. Diagnosis
    c.push_str("<h3>3. Diagnosis</h3>");
    match &d.explanation {
        Some(explanation) => {
            let _ = write!(
                c,
                "<p>{} · confidence {:.0}%</p><pre class=\"explanation\">{}</pre>",
                s.root_cause
                    .map(|c| esc(&c.to_string()))
                    .unwrap_or_default(),
                d.confidence.unwrap_or_default() * 100.0,
                esc(explanation)
            );
        }
        None => c.push_str("<p class=\"muted\">Not diagnosed yet.</p>"),
    }
    if let Some(narrative) = &d.narrative {
        let _ = write!(
            c,
            "<h4>Narrative (written by the LLM, checked against the evidence)</h4><pre class=\"narrative\" id=\"narrative\">{}</pre>",
            esc(narrative)
        );
    }
    if let Some(llm) = &d.llm {
        c.push_str(&llm_usage(llm));
    }
    // 4. Runbook
    c.push_str("<h3>4. Runbook section</h3>");
    match (&d.runbook, &d.runbook_section) {
        (Some(r), section) => {
            let _ = write!(
                c,
                "<p id=\"runbook\"><code>{}</code> v{} — “{}” <span class=\"muted\">sha256 {}</span></p>",
                esc(&r.id),
                esc(&r.version),
                esc(&r.section),
                esc(&r.content_hash[..r.content_hash.len().min(16)])
            );
            match section {
                Some(text) => {
                    if !text.hash_matches {
                        c.push_str("<p class=\"error\">The built-in runbook text differs from the version the decision followed.</p>");
                    }
                    let _ = write!(c, "<pre class=\"runbook\">{}</pre>", esc(&text.text));
                }
                None => {
                    c.push_str("<p class=\"muted\">Section text not available in this build.</p>")
                }
            }
        }
        (None, _) => c.push_str("<p class=\"muted\">No runbook section cited.</p>"),
    }
    if !d.recommended_actions.is_empty() {
        c.push_str("<p>Recommended:</p><ul>");
        for a in &d.recommended_actions {
            let _ = write!(c, "<li>{}</li>", proposal(a));
        }
        c.push_str("</ul>");
    }
    if let Some(fix) = &d.developer_fix {
        let _ = write!(
            c,
            "<h3>Developer fix</h3><pre class=\"fix\">{}</pre>",
            esc(fix)
        );
    }
    // 5. Decision and actions
    c.push_str("<h3>5. Decision</h3>");
    match &d.decision {
        Some(dec) => {
            let _ = write!(
                c,
                "<p id=\"decision\">{} — {}</p>",
                status_badge(&dec.state.to_string()),
                esc(&dec.reason)
            );
        }
        None => c.push_str("<p class=\"muted\">No decision yet.</p>"),
    }
    c.push_str("<h3>6. Actions (audit ledger)</h3>");
    if d.actions.is_empty() {
        c.push_str("<p class=\"muted\">No records.</p>");
    } else {
        c.push_str("<table id=\"ledger\"><thead><tr><th>#</th><th>at</th><th>state</th><th>action</th><th>reason</th><th>verification</th><th>previous → hash</th></tr></thead><tbody>");
        for a in &d.actions {
            let action = a
                .action
                .as_ref()
                .map(|x| {
                    format!(
                        "{} <code>{}</code> <span class=\"muted\">{}</span>",
                        esc(&x.kind.to_string()),
                        esc(&x.target),
                        esc(&format!("{:?}", x.mode).to_lowercase())
                    )
                })
                .unwrap_or_default();
            let verification = a
                .verification
                .as_ref()
                .map(|v| {
                    format!(
                        "{} after {} attempts: {}",
                        if v.healthy { "healthy" } else { "UNHEALTHY" },
                        v.attempts,
                        esc(&v.detail)
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                c,
                "<tr class=\"ledger-row\" data-seq=\"{seq}\" data-state=\"{state}\" data-hash=\"{hash}\" data-prev-hash=\"{prev}\"><td>{seq}</td><td>{at}</td><td>{badge}</td><td>{action}</td><td>{reason}</td><td>{verification}</td><td><code title=\"{prev}\">{prev_short}</code> → <code title=\"{hash}\">{hash_short}</code></td></tr>",
                seq = a.seq,
                state = esc(&a.state.to_string()),
                hash = esc(&a.hash),
                prev = esc(&a.prev_hash),
                at = time(Some(a.at)),
                badge = status_badge(&a.state.to_string()),
                reason = esc(&a.reason),
                prev_short = esc(&a.prev_hash[..a.prev_hash.len().min(12)]),
                hash_short = esc(&a.hash[..a.hash.len().min(12)]),
            );
        }
        c.push_str("</tbody></table>");
    }
    c.push_str("<h3>7. Verification</h3>");
    match &d.verification {
        Some(v) => {
            let _ = write!(
                c,
                "<p id=\"verification\">{} after {} attempts — {}</p>",
                if v.healthy { "healthy" } else { "unhealthy" },
                v.attempts,
                esc(&v.detail)
            );
        }
        None => c.push_str("<p class=\"muted\">Not verified yet.</p>"),
    }
    c.push_str("<h3>8. Audit chain</h3>");
    let _ = write!(
        c,
        "<p>{} — {} records, head <code>{}</code></p>",
        chain_badge(d.audit_chain.status),
        d.audit_chain.records,
        esc(d.audit_chain.head_hash.as_deref().unwrap_or("—"))
    );
    if !d.audit_chain.problems.is_empty() {
        c.push_str("<ul class=\"error\">");
        for p in &d.audit_chain.problems {
            let _ = write!(c, "<li>{}</li>", esc(p));
        }
        c.push_str("</ul>");
    }
    c.push_str("</section>");
    if let Some(report) = &d.investigation {
        c.push_str(&super::investigation::section(report));
    }
    c.push_str(&super::investigations::incident_section(
        chrome,
        &s.id,
        &d.investigations,
        investigating,
    ));

    c.push_str("<section id=\"timeline\"><h2>Timeline</h2><table><thead><tr><th>at</th><th>topic</th><th>event</th></tr></thead><tbody>");
    for e in &d.timeline {
        let _ = write!(
            c,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(Some(e.at)),
            esc(e.topic),
            esc(&e.text)
        );
    }
    c.push_str("</tbody></table></section>");
    let attrs = format!(" data-page=\"incident\" data-incident=\"{}\"", esc(&s.id));
    layout(&format!("Incident {}", s.id), Some(chrome), &attrs, &c)
}

/// A proposed action: kind, target, parameters, why, and the evidence it cites.
pub(super) fn proposal(a: &ActionProposal) -> String {
    format!(
        "<strong>{}</strong> <code>{}</code> <code>{}</code> — {} (evidence {})",
        esc(&a.kind.to_string()),
        esc(&a.target),
        esc(&serde_json::to_string(&a.params).unwrap_or_default()),
        esc(&a.rationale),
        esc(&a.evidence_ids.join(", "))
    )
}

/// Tokens and cost the diagnosis spent on the LLM, and output it discarded.
fn llm_usage(llm: &LlmUsage) -> String {
    if !llm.used {
        return "<p class=\"muted\" id=\"llm-usage\" data-llm=\"unused\">LLM: not used for this diagnosis.</p>".into();
    }
    let mut out = format!(
        "<p id=\"llm-usage\" data-llm=\"used\">LLM{model}: <span id=\"llm-tokens\">{prompt} prompt + {completion} completion tokens</span> · <span id=\"llm-cost\">${cost:.4}</span></p>",
        model = llm
            .model
            .as_deref()
            .map(|m| format!(" <code>{}</code>", esc(m)))
            .unwrap_or_default(),
        prompt = llm.prompt_tokens,
        completion = llm.completion_tokens,
        cost = llm.cost_usd,
    );
    if !llm.discarded.is_empty() {
        out.push_str("<p>Discarded LLM output:</p><ul class=\"error\" id=\"llm-discarded\">");
        for reason in &llm.discarded {
            let _ = write!(out, "<li>{}</li>", esc(reason));
        }
        out.push_str("</ul>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(url_encode("a b/c?d"), "a%20b%2Fc%3Fd");
    }
}
