//! The incident API (`/api`): JSON for scripts and tools, with the console's authentication.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use opsmesh_proto::approval::ApprovalDecision;
use opsmesh_runtime::problem::Problem;

use super::{Console, decide_problem, may_decide};

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
    let token = req
        .headers()
        .get("X-CSRF-Token")
        .and_then(|v| v.to_str().ok());
    if let Err(problem) = console.check_csrf(&req, &identity, token) {
        return problem.response();
    }
    let request: ApiDecision = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed request",
                err.to_string(),
            )
            .response();
        }
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
