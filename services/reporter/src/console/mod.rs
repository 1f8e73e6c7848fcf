//! The operator console (server-rendered HTML, a little vanilla JS for live updates over
//! server-sent events) and the incident API.
//!
//! Authentication: a session after signing in with a named token (`users_file` /
//! `users_env`) or a one-time sign-in link (`signin_link_file`), held server-side and
//! re-checked against the file it came from on every request,
//! `Authorization: Bearer <token>` (API clients), or the user header of an authenticating
//! proxy (`trusted_user_header`, from `trusted_proxies` only). State-changing requests made
//! with ambient credentials (cookie, proxy) must carry the CSRF token bound to the user and
//! session, and an `Origin` (or `Referer`) equal to the console's origin.
//!
//! Authorisation: every identity has a role; only `approver` may approve or reject, and queue
//! investigations.

mod api;
mod config;
mod decisions;
mod events;
mod filter;
mod html;
mod investigation;
mod investigations;
pub mod login_limit;
mod session;
mod sessions;
mod signin;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{
    HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    http::{StatusCode, header},
    web,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{ConfigError, problem::Problem};

pub use config::ConsoleConfig;
pub use html::url_encode;
use login_limit::{FailedAuthLimiter, FailedAuthLimits, FailedAuthMetrics};
use session::{CSRF_COOKIE, Keys, SESSION_COOKIE, random_nonce};
use sessions::SessionTable;

use crate::{
    approvals::Decider,
    auth::{Credential, Holder, Role, TokenSet, bearer, credential_of},
    investigate::Requester,
    timeline::{IncidentStore, IncidentSummary},
};

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Signed session cookie; the nonce binds its CSRF token.
    Session { nonce: String },
    /// Authenticating proxy header; the nonce is the `opsmesh_csrf` cookie's (if any).
    Proxy { nonce: Option<String> },
    /// `Authorization: Bearer` — not ambient, needs no CSRF token.
    Bearer,
}

/// Why a request has no identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or not a valid one.
    Unauthenticated,
    /// The peer gave too many bad tokens: no token is looked at before this has passed.
    Throttled(Duration),
}

impl Refusal {
    /// `401` (with `WWW-Authenticate`) or `429` (with `Retry-After`).
    fn response(self) -> HttpResponse {
        match self {
            Refusal::Unauthenticated => unauthorized(),
            Refusal::Throttled(wait) => login_limit::throttled(wait).response(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub role: Role,
    pub via: Via,
}

/// The console's shared state (one per process, shared by every HTTP worker).
pub struct Console {
    config: ConsoleConfig,
    users: Option<TokenSet>,
    /// One-time sign-in link tokens, and those already used (each signs in once).
    links: Option<TokenSet>,
    spent_links: Mutex<HashSet<Credential>>,
    keys: Keys,
    sessions: SessionTable,
    /// Bad tokens per peer, at the sign-in form and as bearer tokens.
    failed_auth: FailedAuthLimiter,
    store: Arc<IncidentStore>,
    decider: Decider,
    requester: Requester,
    /// Ends live streams when the application stops, so the HTTP server drains in time.
    shutdown: CancellationToken,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Console {
    pub fn new(
        config: &ConsoleConfig,
        store: Arc<IncidentStore>,
        decider: Decider,
        requester: Requester,
        shutdown: CancellationToken,
        registry: &prometheus::Registry,
        failed_auth: &FailedAuthMetrics,
    ) -> Result<Self, ConfigError> {
        let users = TokenSet::load_configured(
            config.users_file.as_deref(),
            config.users_env.as_deref(),
            "reporter.console.users",
        )?;
        let links = TokenSet::load_configured(
            config.signin_link_file.as_deref(),
            None,
            "reporter.console.signin_link",
        )?;
        let keys = match &config.session_key_file {
            Some(path) => Keys::new(
                std::fs::read(path)
                    .map_err(|e| {
                        ConfigError::invalid(
                            "reporter.console.session_key_file",
                            format!("{}: {e}", path.display()),
                        )
                    })?
                    .trim_ascii()
                    .to_vec(),
            ),
            None => Keys::random(),
        };
        Ok(Self {
            config: config.clone(),
            users,
            links,
            spent_links: Mutex::new(HashSet::new()),
            keys,
            sessions: SessionTable::new(config.max_sessions, registry),
            failed_auth: FailedAuthLimiter::new(
                "console",
                FailedAuthLimits {
                    max_failures: config.login_failures_per_peer,
                    window: config.login_failure_window,
                    max_peers: config.max_login_peers,
                    trusted_proxies: config.trusted_proxies.clone(),
                },
                failed_auth,
            ),
            store,
            decider,
            requester,
            shutdown,
        })
    }

    pub fn routes(self: &Arc<Self>, config: &mut web::ServiceConfig) {
        config
            .app_data(web::Data::from(self.clone()))
            .route("/api/incidents", web::get().to(api::api_list))
            .route("/api/incidents/{id}", web::get().to(api::api_detail))
            .route("/api/approvals", web::get().to(api::api_pending))
            .route(
                "/api/incidents/{id}/approvals",
                web::post().to(api::api_decide),
            )
            .route(
                "/api/investigations",
                web::get().to(api::api_investigations),
            )
            .route("/api/investigations", web::post().to(api::api_investigate))
            .route(
                "/api/investigations/{id}",
                web::get().to(api::api_investigation),
            )
            .route("/console", web::get().to(console_root))
            .route("/console/", web::get().to(console_root))
            .route("/console/login", web::get().to(signin::login_page))
            .route("/console/login", web::post().to(signin::login))
            .route("/console/logout", web::post().to(signin::logout))
            .route("/console/incidents", web::get().to(incidents_page))
            .route("/console/incidents/{id}", web::get().to(incident_page))
            .route(
                "/console/incidents/{id}/decision",
                web::post().to(decisions::decision_form),
            )
            .route(
                "/console/incidents/{id}/investigate",
                web::post().to(investigations::investigate_incident),
            )
            .route(
                "/console/investigations",
                web::get().to(investigations::list_page),
            )
            .route(
                "/console/investigations",
                web::post().to(investigations::ask),
            )
            .route(
                "/console/investigations/{id}",
                web::get().to(investigations::page),
            )
            .route("/console/events", web::get().to(events::events))
            .route("/console/static/console.js", web::get().to(script))
            .route("/console/static/console.css", web::get().to(stylesheet))
            .route("/console/static/favicon.svg", web::get().to(favicon))
            .route("/favicon.ico", web::get().to(favicon));
    }

    /// Who is asking, if anyone we trust. A bearer token counts against its peer's failed
    /// authentications: a peer that gave too many bad ones is refused before it is looked at.
    /// The incidents the query's filters (see [`filter`]) let through, newest first.
    fn list(&self, query: &str) -> Result<Vec<IncidentSummary>, filter::FilterError> {
        let filter = filter::ListFilter::parse(query, chrono::Utc::now())?;
        let mut incidents = self.store.list();
        incidents.retain(|incident| filter.matches(incident));
        Ok(incidents)
    }

    pub fn authenticate(&self, req: &HttpRequest) -> Result<Identity, Refusal> {
        if let Some(header_name) = &self.config.trusted_user_header
            && let Some(value) = req.headers().get(header_name.as_str())
        {
            let peer_ok = req
                .peer_addr()
                .is_some_and(|p| self.config.trusted_proxies.contains(&p.ip()));
            let user = value.to_str().ok().map(str::trim).unwrap_or_default();
            if peer_ok && !user.is_empty() && user.len() <= 256 {
                let role = if self.config.proxy_approvers.iter().any(|a| a == user) {
                    Role::Approver
                } else {
                    Role::Viewer
                };
                return Ok(Identity {
                    user: user.to_owned(),
                    role,
                    via: Via::Proxy {
                        nonce: req.cookie(CSRF_COOKIE).map(|c| c.value().to_owned()),
                    },
                });
            }
        }
        if let Some(users) = &self.users {
            let authorization = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Some(token) = bearer(authorization) {
                let holder = self.check_token(req, users, token)?;
                return Ok(Identity {
                    user: holder.name,
                    role: holder.role,
                    via: Via::Bearer,
                });
            }
        }
        req.cookie(SESSION_COOKIE)
            .and_then(|cookie| self.session_identity(cookie.value()))
            .ok_or(Refusal::Unauthenticated)
    }

    /// The holder of `token` (sign-in form or bearer), unless its peer must wait first; a
    /// bad token counts against the peer.
    fn check_token(
        &self,
        req: &HttpRequest,
        users: &TokenSet,
        token: &str,
    ) -> Result<Holder, Refusal> {
        let peer = self.failed_auth.peer_of(req);
        let now = std::time::Instant::now();
        if let Some(wait) = self.failed_auth.wait(peer, now) {
            tracing::debug!(?peer, path = %req.path(), "console token refused: too many bad tokens");
            return Err(Refusal::Throttled(wait));
        }
        users.identify(token).ok_or_else(|| {
            if self.failed_auth.failed(peer, now) {
                tracing::warn!(?peer, path = %req.path(), "console tokens locked out for this peer: too many bad tokens");
            } else {
                tracing::info!(?peer, path = %req.path(), "console token refused");
            }
            Refusal::Unauthenticated
        })
    }

    /// The holder of a one-time sign-in link token, once: the token is spent by this call.
    fn redeem_link(&self, req: &HttpRequest, token: &str) -> Result<Holder, Refusal> {
        let links = self.links.as_ref().ok_or(Refusal::Unauthenticated)?;
        let holder = self.check_token(req, links, token)?;
        let fresh = self
            .spent_links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(credential_of(token));
        if fresh {
            Ok(holder)
        } else {
            tracing::info!(user = %holder.name, "console sign-in link refused: already used");
            Err(Refusal::Unauthenticated)
        }
    }

    /// The identity of a session cookie: signed by us, open in the session table, and its
    /// user still holding the same token in the users file or the sign-in link file (with the
    /// role it has there now).
    fn session_identity(&self, cookie: &str) -> Option<Identity> {
        let now = unix_now();
        let sealed = self.keys.open(cookie, now)?;
        let open = self.sessions.get(&sealed.nonce, now)?;
        if open.user != sealed.user {
            return None;
        }
        let holder = [&self.users, &self.links]
            .into_iter()
            .flatten()
            .find_map(|set| set.holder_of(&open.user, &open.credential));
        let Some(holder) = holder else {
            tracing::info!(user = %open.user, "console session ended: its token left the users file");
            self.sessions.close(&sealed.nonce);
            return None;
        };
        Some(Identity {
            user: holder.name,
            role: holder.role,
            via: Via::Session {
                nonce: sealed.nonce,
            },
        })
    }

    fn csrf_token(&self, identity: &Identity) -> Option<String> {
        match &identity.via {
            Via::Session { nonce } | Via::Proxy { nonce: Some(nonce) } => {
                Some(self.keys.csrf_token(&identity.user, nonce))
            }
            Via::Proxy { nonce: None } | Via::Bearer => None,
        }
    }

    /// The origin state-changing requests must come from.
    fn origin(&self, req: &HttpRequest) -> String {
        match &self.config.public_origin {
            Some(origin) => origin.clone(),
            None => {
                let info = req.connection_info();
                format!("{}://{}", info.scheme(), info.host())
            }
        }
    }

    /// CSRF defence for requests with ambient credentials: same origin, and the token.
    fn check_csrf(
        &self,
        req: &HttpRequest,
        identity: &Identity,
        token: Option<&str>,
    ) -> Result<(), Problem> {
        let nonce = match &identity.via {
            Via::Bearer => return Ok(()),
            Via::Session { nonce } => Some(nonce),
            Via::Proxy { nonce } => nonce.as_ref(),
        };
        self.check_origin(req)?;
        let ok = nonce
            .zip(token)
            .is_some_and(|(nonce, token)| self.keys.csrf_ok(&identity.user, nonce, token));
        if ok {
            Ok(())
        } else {
            Err(forbidden(
                "csrf",
                "Missing or invalid CSRF token",
                "reload the page and submit again",
            ))
        }
    }

    fn check_origin(&self, req: &HttpRequest) -> Result<(), Problem> {
        let expected = self.origin(req);
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok());
        let same = match (origin, referer) {
            (Some(origin), _) => origin == expected,
            (None, Some(referer)) => {
                referer == expected || referer.starts_with(&format!("{expected}/"))
            }
            (None, None) => false,
        };
        if same {
            Ok(())
        } else {
            Err(forbidden(
                "cross-origin",
                "Cross-origin request refused",
                format!(
                    "state-changing requests must come from {expected} (Origin {}, Referer {})",
                    origin.unwrap_or("absent"),
                    referer.unwrap_or("absent")
                ),
            ))
        }
    }

    fn cookie<'c>(&self, name: &'c str, value: String, max_age: Duration) -> Cookie<'c> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(self.config.cookie_secure)
            .same_site(SameSite::Lax)
            .max_age(CookieDuration::seconds(max_age.as_secs() as i64))
            .finish()
    }
}

fn forbidden(slug: &str, title: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, slug, title, detail)
}

fn unauthorized() -> HttpResponse {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authentication required",
        "send Authorization: Bearer <token>, or sign in at /console/login",
    )
    .response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"opsmesh\""),
    );
    response
}

/// Security headers of every console page.
fn page(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The page's identity, or a redirect to sign in (`429` for a throttled bearer).
fn html_identity(console: &Console, req: &HttpRequest) -> Result<Identity, Box<HttpResponse>> {
    console.authenticate(req).map_err(|refusal| match refusal {
        Refusal::Throttled(_) => Box::new(refusal.response()),
        Refusal::Unauthenticated => {
            let next = req
                .uri()
                .path_and_query()
                .map_or("/console", |p| p.as_str());
            Box::new(see_other(&format!(
                "/console/login?next={}",
                html::url_encode(next)
            )))
        }
    })
}

/// Renders a page for `identity`, issuing the proxy-mode CSRF cookie when it is missing.
fn render(
    console: &Console,
    identity: &Identity,
    status: StatusCode,
    build: impl FnOnce(&html::Chrome) -> String,
) -> HttpResponse {
    let mut identity = identity.clone();
    let mut new_cookie = None;
    if let Via::Proxy { nonce: None } = identity.via {
        let nonce = random_nonce();
        new_cookie = Some(console.cookie(CSRF_COOKIE, nonce.clone(), console.config.session_ttl));
        identity.via = Via::Proxy { nonce: Some(nonce) };
    }
    let chrome = html::Chrome {
        user: identity.user.clone(),
        csrf: console.csrf_token(&identity).unwrap_or_default(),
        can_sign_out: matches!(identity.via, Via::Session { .. }),
        can_decide: identity.role.may_decide(),
        can_investigate: identity.role.may_investigate(),
    };
    let mut response = page(status, build(&chrome));
    if let Some(cookie) = new_cookie {
        let _ = response.add_cookie(&cookie);
    }
    response
}

async fn console_root() -> HttpResponse {
    see_other("/console/incidents")
}

async fn incidents_page(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let identity = match html_identity(&console, &req) {
        Ok(identity) => identity,
        Err(redirect) => return *redirect,
    };
    let (status, list) = match console.list(req.query_string()) {
        Ok(incidents) => (StatusCode::OK, html::List::Shown(incidents)),
        Err(err) => (StatusCode::BAD_REQUEST, html::List::Refused(err)),
    };
    let pending = console.store.pending_approvals();
    let given = filter::given(req.query_string());
    render(&console, &identity, status, |chrome| {
        html::incidents(chrome, &list, &given, &pending)
    })
}

#[derive(Deserialize)]
struct DecidedQuery {
    decided: Option<String>,
    /// The investigation just queued from this page.
    investigating: Option<String>,
}

async fn incident_page(
    console: web::Data<Console>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<DecidedQuery>,
) -> HttpResponse {
    let identity = match html_identity(&console, &req) {
        Ok(identity) => identity,
        Err(redirect) => return *redirect,
    };
    let id = path.into_inner();
    match console.store.detail(&id) {
        Some(detail) => render(&console, &identity, StatusCode::OK, |chrome| {
            html::incident(
                chrome,
                &detail,
                query.decided.as_deref(),
                query.investigating.as_deref(),
            )
        }),
        None => render(&console, &identity, StatusCode::NOT_FOUND, |chrome| {
            html::message(
                chrome,
                "Incident not found",
                &format!(
                    "No incident {id:?} is in this reporter's timeline (it may have been forgotten: reporter.timeline.max_incidents)."
                ),
            )
        }),
    }
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(html::SCRIPT)
}

async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, "max-age=86400"))
        .body(html::FAVICON)
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(html::STYLE)
}
