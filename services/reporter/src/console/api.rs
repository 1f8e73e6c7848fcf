//! The incident API (`/api`): JSON for scripts and tools, with the console's authentication.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use opsmesh_proto::approval::ApprovalDecision;
use opsmesh_runtime::problem::Problem;

use super::{
    Console,
    decisions::{decide_problem, may_decide},
    investigations::{investigate_problem, may_investigate, state_filter},
};
use crate::investigate::Ask;

pub(super) async fn api_list(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    if let Err(refusal) = console.authenticate(&req) {
        return refusal.response();
    }
    match console.list(req.query_string()) {
        Ok(incidents) => HttpResponse::Ok().json(serde_json::json!({ "incidents": incidents })),
        Err(err) => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-filter",
            "Invalid incident filter",
            err.to_string(),
        )
        .response(),
    }
}

pub(super) async fn api_detail(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(refusal) = console.authenticate(&req) {
        return refusal.response();
    }
    let id = path.into_inner();
    match console.store.detail(&id) {
        Some(detail) => HttpResponse::Ok().json(detail),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-incident",
            "Incident not found",
            format!("no incident {id:?} in this reporter's timeline"),
        )
        .response(),
    }
}

pub(super) async fn api_pending(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    if let Err(refusal) = console.authenticate(&req) {
        return refusal.response();
    }
    HttpResponse::Ok().json(serde_json::json!({ "pending": console.store.pending_approvals() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiDecision {
    decision: ApprovalDecision,
    idempotency_key: Option<String>,
    comment: Option<String>,
}

/// `POST /api/incidents/{id}/approvals` `{"decision": "approve"|"reject", "idempotency_key"?,
/// "comment"?}`; cookie-authenticated callers also send `X-CSRF-Token`.
pub(super) async fn api_decide(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let identity = match console.authenticate(&req) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.response(),
    };
    if let Err(problem) = may_decide(&identity) {
        return problem.response();
    }
    if let Err(problem) = check_csrf_header(&console, &req, &identity) {
        return problem.response();
    }
    let request: ApiDecision = match parse_json(&body) {
        Ok(request) => request,
        Err(problem) => return problem.response(),
    };
    let id = path.into_inner();
    match console
        .decider
        .decide(
            &id,
            request.idempotency_key.as_deref(),
            request.decision,
            &identity.user,
            request.comment,
        )
        .await
    {
        Ok((envelope, _)) => HttpResponse::Accepted().json(envelope),
        Err(err) => decide_problem(&err).response(),
    }
}

/// API callers with ambient credentials (cookie, proxy) send the CSRF token as `X-CSRF-Token`.
fn check_csrf_header(
    console: &Console,
    req: &HttpRequest,
    identity: &super::Identity,
) -> Result<(), Problem> {
    let token = req
        .headers()
        .get("X-CSRF-Token")
        .and_then(|v| v.to_str().ok());
    console.check_csrf(req, identity, token)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|err| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed request",
            err.to_string(),
        )
    })
}

/// `GET /api/investigations[?state=queued|running|completed|failed|over_budget]`.
pub(super) async fn api_investigations(
    console: web::Data<Console>,
    req: HttpRequest,
) -> HttpResponse {
    if let Err(refusal) = console.authenticate(&req) {
        return refusal.response();
    }
    match state_filter(req.query_string()) {
        Ok(state) => HttpResponse::Ok()
            .json(serde_json::json!({ "investigations": console.store.investigations(state) })),
        Err(why) => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-filter",
            "Invalid investigation filter",
            why,
        )
        .at("/state")
        .response(),
    }
}

/// `GET /api/investigations/{id}`: state, steps, report.
pub(super) async fn api_investigation(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(refusal) = console.authenticate(&req) {
        return refusal.response();
    }
    let id = path.into_inner();
    match console.store.investigation(&id) {
        Some(detail) => HttpResponse::Ok().json(detail),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-investigation",
            "Investigation not found",
            format!("no investigation {id:?} in this reporter's timeline"),
        )
        .response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiInvestigate {
    incident_id: Option<String>,
    question: Option<String>,
    namespace: Option<String>,
}

/// `POST /api/investigations` `{"incident_id"}` or `{"question", "namespace"?}` → 202
/// `{"investigation_id", "state": "queued"}`; cookie-authenticated callers also send
/// `X-CSRF-Token`.
pub(super) async fn api_investigate(
    console: web::Data<Console>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let identity = match console.authenticate(&req) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.response(),
    };
    if let Err(problem) = may_investigate(&identity) {
        return problem.response();
    }
    if let Err(problem) = check_csrf_header(&console, &req, &identity) {
        return problem.response();
    }
    let request: ApiInvestigate = match parse_json(&body) {
        Ok(request) => request,
        Err(problem) => return problem.response(),
    };
    let ask = match Ask::from_fields(request.incident_id, request.question, request.namespace) {
        Ok(ask) => ask,
        Err(why) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Investigation not queued",
                why,
            )
            .at("/incident_id")
            .response();
        }
    };
    match console
        .requester
        .request(ask, &format!("console:{}", identity.user))
        .await
    {
        Ok(envelope) => HttpResponse::Accepted().json(serde_json::json!({
            "investigation_id": envelope.payload.investigation_id,
            "state": opsmesh_proto::investigation::InvestigationState::Queued,
            "topic": opsmesh_proto::topics::INVESTIGATION_REQUESTS,
            "envelope_id": envelope.id,
        })),
        Err(err) => investigate_problem(&err).response(),
    }
}
