//! Approving and rejecting from the console: the incident page's form, and the errors both
//! the form and the API answer with.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use opsmesh_proto::approval::ApprovalDecision;
use opsmesh_runtime::problem::Problem;

use super::{Console, Identity, forbidden, html, render, see_other};
use crate::approvals::DecideError;

/// Only approvers decide; a viewer's attempt is refused (and logged) before anything is
/// published.
pub(super) fn may_decide(identity: &Identity) -> Result<(), Problem> {
    if identity.role.may_decide() {
        return Ok(());
    }
    tracing::warn!(user = %identity.user, role = %identity.role, "console decision refused: not an approver");
    Err(forbidden(
        "not-an-approver",
        "Approver role required",
        format!(
            "{} has the {} role; approving or rejecting needs the approver role",
            identity.user, identity.role
        ),
    ))
}

#[derive(Deserialize)]
pub(super) struct DecisionForm {
    csrf: Option<String>,
    idempotency_key: String,
    decision: String,
    comment: Option<String>,
}

fn parse_decision(text: &str) -> Option<ApprovalDecision> {
    match text {
        "approve" => Some(ApprovalDecision::Approve),
        "reject" => Some(ApprovalDecision::Reject),
        _ => None,
    }
}

pub(super) fn decide_problem(err: &DecideError) -> Problem {
    let (status, slug) = match err {
        DecideError::UnknownIncident(_) => (StatusCode::NOT_FOUND, "unknown-incident"),
        DecideError::NothingPending(_)
        | DecideError::WrongAction { .. }
        | DecideError::AlreadyDecided { .. } => (StatusCode::CONFLICT, "not-awaiting-approval"),
        DecideError::CommentTooLong => (StatusCode::UNPROCESSABLE_ENTITY, "comment-too-long"),
        DecideError::Publish(_) => (StatusCode::SERVICE_UNAVAILABLE, "bus-unavailable"),
        DecideError::NoSigningKey => (StatusCode::SERVICE_UNAVAILABLE, "approvals-not-configured"),
    };
    let problem = Problem::new(status, slug, "Decision not recorded", err.to_string());
    match err {
        DecideError::Publish(_) => problem.retry_after(5),
        DecideError::CommentTooLong => problem.at("/comment"),
        DecideError::WrongAction { .. } => problem.at("/idempotency_key"),
        _ => problem,
    }
}

pub(super) async fn decision_form(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<DecisionForm>,
) -> HttpResponse {
    let identity = match console.authenticate(&req) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.response(),
    };
    // The role first: a viewer is refused whatever else the request carries.
    if let Err(problem) = may_decide(&identity) {
        return problem.response();
    }
    if let Err(problem) = console.check_csrf(&req, &identity, form.csrf.as_deref()) {
        return problem.response();
    }
    let id = path.into_inner();
    let Some(decision) = parse_decision(&form.decision) else {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-decision",
            "Invalid decision",
            "decision must be approve or reject",
        )
        .at("/decision")
        .response();
    };
    match console
        .decider
        .decide(
            &id,
            Some(&form.idempotency_key),
            decision,
            &identity.user,
            form.comment.clone(),
        )
        .await
    {
        Ok(_) => see_other(&format!(
            "/console/incidents/{}?decided={}",
            html::url_encode(&id),
            form.decision
        )),
        Err(err) => {
            let problem = decide_problem(&err);
            let status =
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            render(&console, &identity, status, |chrome| {
                html::message(chrome, "Decision not recorded", &err.to_string())
            })
        }
    }
}
