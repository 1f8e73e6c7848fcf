//! Signing in with a named token or a one-time sign-in link (both throttled per peer with
//! the bearer tokens) and out.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use super::{
    Console, Refusal, SESSION_COOKIE, Via, html, page, see_other, session::random_nonce,
    sessions::OpenSession, unix_now,
};
use crate::auth::{Holder, credential_of};

/// Only local console paths are followed after signing in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/console/incidents".into(),
    }
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
    error: Option<String>,
    /// A one-time sign-in link's token (`signin_link_file`).
    token: Option<String>,
}

/// The sign-in form, or with `?token=` a one-time sign-in link: a session once, then spent.
pub(super) async fn login_page(
    console: web::Data<Console>,
    req: HttpRequest,
    query: web::Query<NextQuery>,
) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    if let Some(token) = query.token.as_deref().map(str::trim) {
        return match console.redeem_link(&req, token) {
            Ok(holder) => open_session(&console, &holder, token, &next),
            Err(refusal) => refused(refusal, &next),
        };
    }
    page(
        StatusCode::OK,
        html::login(
            &next,
            query.error.is_some(),
            console.users.is_some(),
            console.config.trusted_user_header.as_deref(),
        ),
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    if let Err(problem) = console.check_origin(&req) {
        return problem.response();
    }
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    let users = console.users.as_ref().ok_or(Refusal::Unauthenticated);
    match users.and_then(|users| console.check_token(&req, users, token)) {
        Ok(holder) => open_session(&console, &holder, token, &next),
        Err(refusal) => refused(refusal, &next),
    }
}

/// A failed sign-in: `429` when throttled, else back to the form saying so.
fn refused(refusal: Refusal, next: &str) -> HttpResponse {
    match refusal {
        Refusal::Throttled(_) => refusal.response(),
        Refusal::Unauthenticated => see_other(&format!(
            "/console/login?error=1&next={}",
            html::url_encode(next)
        )),
    }
}

/// Opens a session for `holder`, who signed in with `token`, and goes on to `next`.
fn open_session(console: &Console, holder: &Holder, token: &str, next: &str) -> HttpResponse {
    let ttl = console.config.session_ttl;
    let (now, nonce) = (unix_now(), random_nonce());
    let expires = now + ttl.as_secs();
    let sealed = console.keys.seal(&holder.name, &nonce, expires);
    console.sessions.open(
        nonce,
        OpenSession {
            user: holder.name.clone(),
            credential: credential_of(token),
            expires,
        },
        now,
    );
    tracing::info!(user = %holder.name, role = %holder.role, "console sign-in");
    let mut response = see_other(next);
    let _ = response.add_cookie(&console.cookie(SESSION_COOKIE, sealed, ttl));
    response
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: Option<String>,
}

pub(super) async fn logout(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    if let Ok(identity) = console.authenticate(&req) {
        if let Err(problem) = console.check_csrf(&req, &identity, form.csrf.as_deref()) {
            return problem.response();
        }
        // Server-side: the cookie, if kept or copied, no longer opens anything.
        if let Via::Session { nonce } = &identity.via {
            console.sessions.close(nonce);
            tracing::info!(user = %identity.user, "console sign-out");
        }
    }
    let mut response = see_other("/console/login");
    let mut gone = console.cookie(SESSION_COOKIE, String::new(), Duration::ZERO);
    gone.make_removal();
    let _ = response.add_cookie(&gone);
    response
}
