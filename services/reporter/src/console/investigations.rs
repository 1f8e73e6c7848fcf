//! Investigations in the console: the incident page's "Investigate" button and list, the
//! investigations page (filter by state, ask a question) and one investigation's page (state,
//! steps, the report with its citations, cost). Queueing needs the approver role (see
//! [`crate::auth::Role::may_investigate`]).

use std::fmt::Write;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use opsmesh_proto::investigation::{InvestigationState, MAX_QUESTION_CHARS};
use opsmesh_runtime::problem::Problem;

use super::{
    Console, Identity, forbidden, html,
    html::{Chrome, esc, status_badge, time, url_encode},
    html_identity, investigation, render, see_other,
};
use crate::{
    investigate::{Ask, InvestigateError},
    timeline::{InvestigationDetail, InvestigationSummary, InvestigationView},
};

/// Only approvers queue investigations; anyone else is refused (and logged) before anything
/// is published.
pub(super) fn may_investigate(identity: &Identity) -> Result<(), Problem> {
    if identity.role.may_investigate() {
        return Ok(());
    }
    tracing::warn!(user = %identity.user, role = %identity.role, "investigation request refused: not an approver");
    Err(forbidden(
        "not-an-approver",
        "Approver role required",
        format!(
            "{} has the {} role; queueing an investigation (it spends model tokens) needs the approver role",
            identity.user, identity.role
        ),
    ))
}

/// The problem an investigation request failed with: 400 naming the field, 404 for an
/// unknown incident, 503 when the bus did not take it.
pub(super) fn investigate_problem(err: &InvestigateError) -> Problem {
    let (status, slug) = match err {
        InvestigateError::UnknownIncident(_) => (StatusCode::NOT_FOUND, "unknown-incident"),
        InvestigateError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid-request"),
        InvestigateError::Publish(_) => (StatusCode::SERVICE_UNAVAILABLE, "bus-unavailable"),
    };
    let problem = Problem::new(status, slug, "Investigation not queued", err.to_string());
    match (err, err.field()) {
        (InvestigateError::Publish(_), _) => problem.retry_after(5),
        (_, Some(field)) => problem.at(format!("/{field}")),
        _ => problem,
    }
}

/// The `state` filter of the list: `None` for any; an unknown state names the field.
pub(super) fn state_filter(query: &str) -> Result<Option<InvestigationState>, String> {
    let given = web::Query::<StateQuery>::from_query(query)
        .map_err(|e| format!("query: {e}"))?
        .into_inner()
        .state
        .filter(|s| !s.is_empty());
    given
        .map(|state| {
            state.parse().map_err(|_| {
                format!("state: {state:?} is not queued, running, completed, failed or over_budget")
            })
        })
        .transpose()
}

#[derive(Deserialize)]
pub(super) struct StateQuery {
    state: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct AskForm {
    csrf: Option<String>,
    #[serde(default)]
    question: String,
    namespace: Option<String>,
}

/// Checks who asks (signed in, approver, CSRF) and queues `ask`; a refusal is the response.
async fn queue(
    console: &Console,
    req: &HttpRequest,
    csrf: Option<&str>,
    ask: Ask,
) -> Result<(Identity, String), HttpResponse> {
    let identity = console
        .authenticate(req)
        .map_err(|refusal| refusal.response())?;
    may_investigate(&identity).map_err(|p| p.response())?;
    console
        .check_csrf(req, &identity, csrf)
        .map_err(|p| p.response())?;
    match console
        .requester
        .request(ask, &format!("console:{}", identity.user))
        .await
    {
        Ok(envelope) => Ok((identity, envelope.payload.investigation_id)),
        Err(err) => {
            let problem = investigate_problem(&err);
            let status =
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(render(console, &identity, status, |chrome| {
                html::message(chrome, "Investigation not queued", &err.to_string())
            }))
        }
    }
}

/// `POST /console/incidents/{id}/investigate`: queues an investigation of the incident and
/// returns to its page, which lists it queued.
pub(super) async fn investigate_incident(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let id = path.into_inner();
    match queue(
        &console,
        &req,
        form.csrf.as_deref(),
        Ask::Incident(id.clone()),
    )
    .await
    {
        Ok((_, investigation_id)) => see_other(&format!(
            "/console/incidents/{}?investigating={}#investigations",
            url_encode(&id),
            url_encode(&investigation_id)
        )),
        Err(response) => response,
    }
}

/// `POST /console/investigations`: queues a question and shows its page.
pub(super) async fn ask(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<AskForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let ask = Ask::Question {
        question: form.question,
        namespace: form.namespace,
    };
    match queue(&console, &req, form.csrf.as_deref(), ask).await {
        Ok((_, investigation_id)) => see_other(&format!(
            "/console/investigations/{}",
            url_encode(&investigation_id)
        )),
        Err(response) => response,
    }
}

/// `GET /console/investigations[?state=…]`.
pub(super) async fn list_page(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let identity = match html_identity(&console, &req) {
        Ok(identity) => identity,
        Err(redirect) => return *redirect,
    };
    let (status, list) = match state_filter(req.query_string()) {
        Ok(state) => (
            StatusCode::OK,
            Ok((state, console.store.investigations(state))),
        ),
        Err(why) => (StatusCode::BAD_REQUEST, Err(why)),
    };
    render(&console, &identity, status, |chrome| {
        list_html(chrome, &list)
    })
}

/// `GET /console/investigations/{id}`.
pub(super) async fn page(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let identity = match html_identity(&console, &req) {
        Ok(identity) => identity,
        Err(redirect) => return *redirect,
    };
    let id = path.into_inner();
    match console.store.investigation(&id) {
        Some(detail) => render(&console, &identity, StatusCode::OK, |chrome| {
            detail_html(chrome, &detail)
        }),
        None => render(&console, &identity, StatusCode::NOT_FOUND, |chrome| {
            html::message(
                chrome,
                "Investigation not found",
                &format!(
                    "No investigation {id:?} is in this reporter's timeline (it may have been forgotten: reporter.timeline.max_questions, max_investigations_per_incident)."
                ),
            )
        }),
    }
}

fn rows(c: &mut String, list: &[InvestigationSummary], with_incident: bool) {
    c.push_str("<table class=\"investigations\"><thead><tr><th>investigation</th><th>state</th>");
    if with_incident {
        c.push_str("<th>incident</th>");
    }
    c.push_str("<th>question</th><th>requested by</th><th>requested</th><th>steps</th><th>tokens</th><th>cost</th></tr></thead><tbody>");
    for i in list {
        let _ = write!(
            c,
            "<tr class=\"investigation-row\" data-investigation=\"{id}\" data-state=\"{state}\"><td><a href=\"/console/investigations/{link}\"><code>{id}</code></a></td><td>{badge}</td>",
            id = esc(&i.investigation_id),
            link = esc(&url_encode(&i.investigation_id)),
            state = esc(&i.state.to_string()),
            badge = status_badge(&i.state.to_string()),
        );
        if with_incident {
            let incident = i.incident_id.as_deref().map_or_else(String::new, |id| {
                format!(
                    "<a href=\"/console/incidents/{}\">{}</a>",
                    esc(&url_encode(id)),
                    esc(id)
                )
            });
            let _ = write!(c, "<td>{incident}</td>");
        }
        let _ = write!(
            c,
            "<td>{question}</td><td>{by}</td><td>{at}</td><td>{steps}</td><td>{tokens}</td><td>${cost:.4}</td></tr>",
            question = esc(i.question.as_deref().unwrap_or("")),
            by = esc(i.requested_by.as_deref().unwrap_or("")),
            at = time(i.requested_at.or(i.started_at)),
            steps = i.steps,
            tokens = i.prompt_tokens + i.completion_tokens,
            cost = i.cost_usd,
        );
    }
    c.push_str("</tbody></table>");
}

/// The incident page's investigations: a notice for the one just queued, the button (or why
/// there is none) and every investigation of the incident.
pub(super) fn incident_section(
    chrome: &Chrome,
    incident_id: &str,
    investigations: &[InvestigationSummary],
    queued: Option<&str>,
) -> String {
    let mut c = format!(
        "<section id=\"investigations\"><h2>Investigations ({})</h2>",
        investigations.len()
    );
    if let Some(queued) = queued {
        let _ = write!(
            c,
            "<p class=\"notice\" id=\"investigation-queued\">Investigation <a href=\"/console/investigations/{}\"><code>{}</code></a> was queued on opsmesh.investigation-requests.v1.</p>",
            esc(&url_encode(queued)),
            esc(queued)
        );
    }
    if chrome.can_investigate {
        let _ = write!(
            c,
            "<form method=\"post\" action=\"/console/incidents/{id}/investigate\" class=\"investigate\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" id=\"investigate\">Investigate</button><span class=\"as\">as {user}; the investigator spends model tokens</span></form>",
            id = esc(&url_encode(incident_id)),
            csrf = esc(&chrome.csrf),
            user = esc(&chrome.user),
        );
    } else {
        let _ = write!(
            c,
            "<p class=\"viewer\" id=\"investigate-viewer-only\">You ({}) are a viewer: queueing an investigation needs the approver role.</p>",
            esc(&chrome.user)
        );
    }
    if !investigations.is_empty() {
        rows(&mut c, investigations, false);
    }
    c.push_str("</section>");
    c
}

fn list_html(
    chrome: &Chrome,
    list: &Result<(Option<InvestigationState>, Vec<InvestigationSummary>), String>,
) -> String {
    let mut c = String::from("<h1>Investigations</h1>");
    if chrome.can_investigate {
        let _ = write!(
            c,
            "<section id=\"ask\"><h2>Ask a question</h2><form method=\"post\" action=\"/console/investigations\" class=\"ask\" id=\"ask-form\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><label>Question <textarea name=\"question\" id=\"question\" maxlength=\"{MAX_QUESTION_CHARS}\" required></textarea></label><label>Namespace <input type=\"text\" name=\"namespace\" id=\"namespace\" maxlength=\"63\" placeholder=\"optional\"></label><button type=\"submit\" id=\"ask-question\">Investigate</button><span class=\"as\">as {user}; the investigator spends model tokens</span></form></section>",
            csrf = esc(&chrome.csrf),
            user = esc(&chrome.user),
        );
    }
    let selected = list.as_ref().ok().and_then(|(state, _)| *state);
    let mut options = String::from("<option value=\"\">any</option>");
    for state in <InvestigationState as strum::VariantArray>::VARIANTS {
        let _ = write!(
            options,
            "<option value=\"{0}\"{1}>{0}</option>",
            state,
            if selected == Some(*state) {
                " selected"
            } else {
                ""
            }
        );
    }
    let _ = write!(
        c,
        "<section id=\"investigation-list\"><form method=\"get\" action=\"/console/investigations\" class=\"filters\"><label>State <select name=\"state\" id=\"filter-state\">{options}</select></label><button type=\"submit\" id=\"apply-filters\">Filter</button></form>"
    );
    match list {
        Err(why) => {
            let _ = write!(c, "<p class=\"error\" id=\"filter-error\">{}</p>", esc(why));
        }
        Ok((_, list)) if list.is_empty() => {
            c.push_str("<p class=\"muted\" id=\"no-investigations\">No investigation.</p>")
        }
        Ok((_, list)) => rows(&mut c, list, true),
    }
    c.push_str("</section>");
    html::layout(
        "Investigations",
        Some(chrome),
        " data-page=\"investigations\"",
        &c,
    )
}

fn detail_html(chrome: &Chrome, d: &InvestigationDetail) -> String {
    let s = &d.summary;
    let mut c = format!(
        "<h1>Investigation <code>{}</code> <span id=\"investigation-state\">{}</span></h1>",
        esc(&s.investigation_id),
        status_badge(&s.state.to_string())
    );
    let incident = s.incident_id.as_deref().map_or_else(
        || "—".into(),
        |id| {
            format!(
                "<a href=\"/console/incidents/{}\">{}</a>",
                esc(&url_encode(id)),
                esc(id)
            )
        },
    );
    let _ = write!(
        c,
        "<dl class=\"facts\"><dt>question</dt><dd id=\"investigation-question\">{question}</dd><dt>namespace</dt><dd>{namespace}</dd><dt>incident</dt><dd>{incident}</dd><dt>requested by</dt><dd id=\"investigation-requested-by\">{by}</dd><dt>requested</dt><dd>{requested}</dd><dt>started</dt><dd>{started}</dd><dt>finished</dt><dd>{finished}</dd><dt>detail</dt><dd id=\"investigation-detail\">{detail}</dd><dt>steps</dt><dd>{steps}</dd><dt>tokens</dt><dd>{prompt} prompt + {completion} completion</dd><dt>cost</dt><dd id=\"investigation-total-cost\">${cost:.4}</dd></dl>",
        question = esc(s
            .question
            .as_deref()
            .unwrap_or("why the incident happened and what to do")),
        namespace = esc(s.namespace.as_deref().unwrap_or("—")),
        by = esc(s.requested_by.as_deref().unwrap_or("—")),
        requested = time(s.requested_at),
        started = time(s.started_at),
        finished = time(s.finished_at),
        detail = esc(s.detail.as_deref().unwrap_or("")),
        steps = s.steps,
        prompt = s.prompt_tokens,
        completion = s.completion_tokens,
        cost = s.cost_usd,
    );
    match &d.report {
        Some(report) => c.push_str(&investigation::section(&InvestigationView {
            investigation_id: s.investigation_id.clone(),
            question: s.question.clone().unwrap_or_default(),
            at: s.finished_at.unwrap_or(s.updated_at),
            report: report.clone(),
        })),
        None => {
            let waiting = match s.state {
                InvestigationState::Queued => "Queued: waiting for the investigator to take it up.",
                InvestigationState::Running => "Running: the report follows the last step.",
                _ => "No report.",
            };
            let _ = write!(
                c,
                "<section id=\"investigation-progress\"><p class=\"muted\">{waiting}</p>"
            );
            investigation::steps(&mut c, &d.step_list);
            c.push_str("</section>");
        }
    }
    let attrs = format!(
        " data-page=\"investigation\" data-investigation=\"{}\"",
        esc(&s.investigation_id)
    );
    html::layout(
        &format!("Investigation {}", s.investigation_id),
        Some(chrome),
        &attrs,
        &c,
    )
}
