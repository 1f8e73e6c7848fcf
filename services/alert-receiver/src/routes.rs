//! HTTP endpoints: read a bounded body, authenticate, rate-limit, validate, deduplicate,
//! publish, and answer `202` only once the bus acknowledged every alert.

use std::{sync::Arc, time::Instant};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use opsmesh_proto::{
    Envelope,
    alert::{Alert, AlertSourceKind, Entity, FieldValue},
};
use opsmesh_runtime::{
    Publisher,
    body_deadline::BodyDeadline,
    bus::{BusError, Outgoing},
    problem::Problem,
    telemetry,
};

use crate::{
    auth::{Authenticator, SignatureId},
    config::ReceiverConfig,
    dedup::{Accepted, Claim, Deliveries, DeliveryKey, alert_id},
    failed_auth::FailedAuth,
    fingerprint, json_depth,
    metrics::ReceiverMetrics,
    normalize::{self, FieldIndex, Normalizer},
};

pub struct State {
    pub config: ReceiverConfig,
    pub publisher: Publisher,
    pub metrics: ReceiverMetrics,
    pub cluster: String,
    pub entity_fields: FieldIndex,
    pub auth: Authenticator,
    pub deliveries: Deliveries,
    pub failed_auth: FailedAuth,
}

#[derive(Clone, Copy)]
enum Format {
    Splunk,
    Alertmanager,
}

impl Format {
    fn label(self) -> &'static str {
        match self {
            Self::Splunk => "splunk",
            Self::Alertmanager => "alertmanager",
        }
    }
}

/// How the request proved its origin.
enum Credentials<'a> {
    /// Signature, bearer token (or none, when allowed) in the headers.
    Headers,
    /// `/v1/alerts/splunk/{source}/{token}`.
    Path { source: &'a str, token: &'a str },
}

pub fn configure(config: &mut web::ServiceConfig, state: Arc<State>) {
    config.service(
        web::scope("/v1/alerts")
            .app_data(web::Data::from(state))
            .route("/splunk", web::post().to(splunk))
            .route(
                "/splunk/{source}/{token}",
                web::post().to(splunk_path_token),
            )
            .route("/alertmanager", web::post().to(alertmanager)),
    );
}

/// The `202` answer: every alert's id, in request order.
#[derive(Serialize)]
struct AcceptedBody<'a> {
    alert_ids: Vec<uuid::Uuid>,
    incident_key: Option<&'a str>,
    incident_keys: Vec<&'a str>,
}

/// The `200` answer to a test alert: what the alert would be, and that nothing was opened.
#[derive(Serialize)]
struct TestBody<'a> {
    test: bool,
    incident_opened: bool,
    alert_name: &'a str,
    incident_key: &'a str,
    entity: &'a Entity,
}

/// What an authenticated, valid request led to.
enum Outcome {
    /// Published (or found already published): every alert's ids, and how many of them this
    /// request published (the rest were duplicates of earlier deliveries).
    Published {
        accepted: Vec<Accepted>,
        fresh: usize,
    },
    /// A test alert (`"opsmesh_test": true`): validated, not published.
    Test(Box<Alert>),
}

/// Why a request was refused: a metrics label and the problem body sent back.
pub struct Refusal {
    reason: &'static str,
    problem: Box<Problem>,
}

fn refuse(reason: &'static str, problem: Problem) -> Refusal {
    Refusal {
        reason,
        problem: Box::new(problem),
    }
}

async fn splunk(
    state: web::Data<State>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    accept(
        &state,
        Format::Splunk,
        Credentials::Headers,
        &request,
        payload,
    )
    .await
}

async fn splunk_path_token(
    state: web::Data<State>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> HttpResponse {
    let (source, token) = path.into_inner();
    let credentials = Credentials::Path {
        source: &source,
        token: &token,
    };
    accept(&state, Format::Splunk, credentials, &request, payload).await
}

async fn alertmanager(
    state: web::Data<State>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    accept(
        &state,
        Format::Alertmanager,
        Credentials::Headers,
        &request,
        payload,
    )
    .await
}

async fn accept(
    state: &State,
    format: Format,
    credentials: Credentials<'_>,
    request: &HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let metrics = &state.metrics;
    metrics.received.with_label_values(&[format.label()]).inc();
    metrics.in_flight.inc();
    let started = Instant::now();
    let mut source = "unknown";
    let result = handle(state, format, credentials, request, payload, &mut source).await;
    metrics.in_flight.dec();
    match result {
        Ok(Outcome::Test(alert)) => {
            metrics
                .responses
                .with_label_values(&[format.label(), StatusCode::OK.as_str()])
                .inc();
            tracing::info!(format = format.label(), %source, alert = %alert.name, "test alert validated; no incident opened");
            HttpResponse::Ok().json(TestBody {
                test: true,
                incident_opened: false,
                alert_name: &alert.name,
                incident_key: &alert.fingerprint,
                entity: &alert.entity,
            })
        }
        Ok(Outcome::Published { accepted, fresh }) => {
            metrics
                .publish_seconds
                .with_label_values(&[format.label()])
                .observe(started.elapsed().as_secs_f64());
            metrics
                .accepted
                .with_label_values(&[format.label(), source])
                .inc_by(fresh as u64);
            metrics
                .duplicates
                .with_label_values(&[format.label(), source])
                .inc_by((accepted.len() - fresh) as u64);
            metrics
                .responses
                .with_label_values(&[format.label(), StatusCode::ACCEPTED.as_str()])
                .inc();
            HttpResponse::Accepted().json(AcceptedBody {
                alert_ids: accepted.iter().map(|a| a.alert_id).collect(),
                incident_key: accepted.first().map(|a| a.incident_key.as_str()),
                incident_keys: accepted.iter().map(|a| a.incident_key.as_str()).collect(),
            })
        }
        Err(Refusal { reason, problem }) => {
            metrics
                .rejected
                .with_label_values(&[format.label(), source, reason])
                .inc();
            metrics
                .responses
                .with_label_values(&[format.label(), &problem.status.to_string()])
                .inc();
            tracing::info!(format = format.label(), %source, reason, detail = %problem.detail, "alert refused");
            problem.response()
        }
    }
}

async fn handle<'s>(
    state: &'s State,
    format: Format,
    credentials: Credentials<'_>,
    request: &HttpRequest,
    payload: web::Payload,
    source: &mut &'s str,
) -> Result<Outcome, Refusal> {
    // Before anything is read: a peer guessing credentials is turned away cheaply.
    let peer = state.failed_auth.peer_of(request);
    if let Err(locked) = state.failed_auth.check(peer) {
        state.metrics.auth_locked_out.inc();
        return Err(refuse(
            "auth_locked_out",
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failed-authentications",
                "Too many failed authentications from this address",
                format!(
                    "more than {} failed authentications within {:?} \
                     (receiver.failed_auth.max_failures, window); retry later",
                    state.config.failed_auth.max_failures, state.config.failed_auth.window
                ),
            )
            .retry_after(locked.retry_after_secs),
        ));
    }
    if let Credentials::Path { source, .. } = credentials
        && state.auth.authenticate_path(source, "").is_none()
    {
        // Probing for sources with path tokens counts as a failed authentication.
        state.failed_auth.record_failure(peer);
        return Err(refuse(
            "not_found",
            Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "No such endpoint",
                "path-token delivery is not configured for this source",
            ),
        ));
    }
    check_content_type(request)?;
    let body = read_body(payload, state.config.max_body_bytes).await?;
    let authenticated = match credentials {
        Credentials::Headers => state.auth.authenticate(request.headers(), &body),
        Credentials::Path { source, token } => state
            .auth
            .authenticate_path(source, token)
            .expect("checked above"),
    }
    .map_err(|e| {
        state.failed_auth.record_failure(peer);
        refuse(e.reason(), e.problem())
    })?;
    *source = authenticated.source;
    state.auth.check_rate(source).map_err(|limited| {
        refuse(
            "rate_limited",
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many alerts from this source",
                format!("source {source:?} is over its rate limit"),
            )
            .retry_after(limited.retry_after_secs),
        )
    })?;
    let text = json_text(&body, state.config.max_depth)?;
    let normalizer = Normalizer {
        fields: &state.entity_fields,
        max_rows: state.config.max_rows,
        max_alerts: state.config.max_alerts_per_request,
        max_unusable_chars: state.config.max_unusable_value_chars,
        default_cluster: &state.cluster,
    };
    let (mut alerts, test) = match format {
        Format::Splunk => normalizer
            .splunk(text, source)
            .map(|splunk| (vec![splunk.alert], splunk.test)),
        Format::Alertmanager => normalizer
            .alertmanager(text, source)
            .map(|alerts| (alerts, false)),
    }
    .map_err(|problem| {
        let reason = match StatusCode::from_u16(problem.status) {
            Ok(StatusCode::BAD_REQUEST) => "malformed",
            Ok(StatusCode::PAYLOAD_TOO_LARGE) => "too_many_alerts",
            _ => "invalid",
        };
        refuse(reason, problem)
    })?;
    if test && let Some(alert) = alerts.pop() {
        remember(state, authenticated.signature);
        return Ok(Outcome::Test(Box::new(alert)));
    }
    for alert in alerts.iter().filter(|a| a.entity.is_unusable()) {
        state
            .metrics
            .unusable_entities
            .with_label_values(&[format.label(), source])
            .inc();
        tracing::warn!(
            format = format.label(),
            %source,
            alert = ?alert.name,
            unusable = %alert.entity.unusable_summary(),
            "alert names no usable entity: accepted, to be escalated without action"
        );
    }
    let (accepted, fresh) = deliver(state, alerts).await?;
    remember(state, authenticated.signature);
    Ok(Outcome::Published { accepted, fresh })
}

/// A signature that was accepted cannot be replayed within the window, test alert or not.
fn remember(state: &State, signature: Option<SignatureId>) {
    if let Some(signature) = signature {
        state.auth.remember(signature);
    }
}

/// Identity of one delivery: a retry of the same alert has the same key.
fn delivery_key(alert: &Alert) -> DeliveryKey {
    let mut hasher = Sha256::new();
    let mut put = |bytes: &[u8]| fingerprint::update_prefixed(&mut hasher, bytes);
    put(alert.source.as_bytes());
    match (&alert.sid, &alert.starts_at) {
        // Splunk: the same search run (sid) with the same rows.
        (Some(sid), _) => {
            put(sid.as_bytes());
            for row in &alert.rows {
                put(&(row.len() as u64).to_be_bytes());
                for (field, value) in row {
                    put(field.as_bytes());
                    match value {
                        FieldValue::One(one) => {
                            put(b"one");
                            put(one.as_bytes());
                        }
                        FieldValue::Many(many) => {
                            put(b"many");
                            put(&(many.len() as u64).to_be_bytes());
                            many.iter().for_each(|v| put(v.as_bytes()));
                        }
                    }
                }
            }
        }
        // Alertmanager: its fingerprint, status and start.
        (None, starts_at) => {
            put(alert.fingerprint.as_bytes());
            put(format!("{:?}{starts_at:?}", alert.status).as_bytes());
        }
    }
    hasher.finalize().into()
}

async fn deliver(state: &State, alerts: Vec<Alert>) -> Result<(Vec<Accepted>, usize), Refusal> {
    let mut answers: Vec<Option<Accepted>> = vec![None; alerts.len()];
    let mut owned = Vec::new();
    let mut waiting = Vec::new();
    for (index, alert) in alerts.into_iter().enumerate() {
        let key = delivery_key(&alert);
        match state.deliveries.claim(&key) {
            Claim::Duplicate(accepted) => answers[index] = Some(accepted),
            Claim::Wait(receiver) => waiting.push((index, receiver)),
            Claim::Owner(ownership) => {
                let cluster = alert
                    .entity
                    .cluster
                    .clone()
                    .unwrap_or_else(|| state.cluster.clone());
                let incident = alert.fingerprint.clone();
                let received = alert.received_at;
                let mut envelope =
                    Envelope::new("opsmesh-alert-receiver", cluster, Some(incident), alert);
                envelope.id = alert_id(&key, received, state.config.dedup_window);
                // The incident's trace is the request's: the sender's, if it sent a traceparent.
                if let Some(trace) = telemetry::current_trace() {
                    envelope.trace = trace;
                }
                owned.push((index, ownership, envelope));
            }
        }
    }
    let messages: Vec<Outgoing> = owned
        .iter()
        .map(|(_, _, e)| Publisher::message(e.incident_id.as_deref().unwrap_or_default(), e))
        .collect();
    // Every alert's size first: none is published when one can never be (the sender must not
    // retry it, and a 4xx for a group that was half published would lose nothing but confuse).
    let published = match too_large(state, &owned, &messages) {
        Some(refusal) => Err(refusal),
        None => publish_all(state, messages).await,
    };
    let fresh = owned.len();
    for (index, ownership, envelope) in owned {
        let accepted = published.is_ok().then(|| Accepted {
            alert_id: envelope.id,
            incident_key: envelope.incident_id.clone().unwrap_or_default(),
        });
        ownership.finish(accepted.clone());
        answers[index] = accepted;
    }
    published?;
    for (index, mut receiver) in waiting {
        let outcome = receiver
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|o| o.clone())
            .flatten();
        match outcome {
            Some(accepted) => answers[index] = Some(accepted),
            None => {
                return Err(unavailable(
                    state,
                    "a concurrent delivery of this alert failed".into(),
                ));
            }
        }
    }
    Ok((
        answers
            .into_iter()
            .map(|a| a.expect("every alert answered"))
            .collect(),
        fresh,
    ))
}

/// Reads the body up to `limit` bytes: `413` beyond it, before buffering the excess. A body
/// that arrives in one chunk (most do) is kept as it is, not copied.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, Refusal> {
    let too_large = || {
        refuse(
            "too_large",
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("the body exceeds the {limit}-byte limit (receiver.max_body_bytes)"),
            ),
        )
    };
    let mut single: Option<web::Bytes> = None;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| match err {
            actix_web::error::PayloadError::Overflow => too_large(),
            timeout if BodyDeadline::is_timeout(&timeout) => refuse(
                "body_timeout",
                Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body-timeout",
                    "The request body arrived too slowly",
                    timeout.to_string(),
                ),
            ),
            other => refuse(
                "unreadable",
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable-body",
                    "Request body could not be read",
                    other.to_string(),
                ),
            ),
        })?;
        let read = single.as_ref().map_or(body.len(), web::Bytes::len);
        if read + chunk.len() > limit {
            return Err(too_large());
        }
        match single.take() {
            None if body.is_empty() => single = Some(chunk),
            earlier => {
                body.extend_from_slice(&earlier.unwrap_or_default());
                body.extend_from_slice(&chunk);
            }
        }
    }
    Ok(single.unwrap_or_else(|| body.freeze()))
}

fn check_content_type(request: &HttpRequest) -> Result<(), Refusal> {
    let content_type = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .as_bytes();
    let structured_json = media.len() >= "application/+json".len()
        && media[.."application/".len()].eq_ignore_ascii_case(b"application/")
        && media[media.len() - "+json".len()..].eq_ignore_ascii_case(b"+json");
    if media.eq_ignore_ascii_case(b"application/json") || structured_json {
        Ok(())
    } else {
        Err(refuse(
            "content_type",
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Only JSON is accepted",
                format!("Content-Type must be application/json, got {content_type:?}"),
            ),
        ))
    }
}

/// The body as text, once it is known to be UTF-8 and not nested too deeply to parse.
fn json_text(body: &[u8], max_depth: usize) -> Result<&str, Refusal> {
    let bad = |detail: String| refuse("malformed", normalize::malformed(detail));
    if let Some(offset) = json_depth::exceeds(body, max_depth) {
        return Err(bad(format!(
            "nesting deeper than {max_depth} levels at byte {offset}"
        )));
    }
    std::str::from_utf8(body).map_err(|e| bad(format!("body is not UTF-8: {e}")))
}

fn unavailable(state: &State, detail: String) -> Refusal {
    refuse(
        "bus_unavailable",
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus-unavailable",
            "The alert could not be stored; retry later",
            detail,
        )
        .retry_after(state.config.retry_after_secs),
    )
}

/// `413` for the first alert whose message exceeds the bus's limit.
fn too_large<O>(
    state: &State,
    owned: &[(usize, O, Envelope<Alert>)],
    messages: &[Outgoing],
) -> Option<Refusal> {
    owned
        .iter()
        .zip(messages)
        .find_map(|((index, _, envelope), message)| {
            let err = state.publisher.check_size(message).err()?;
            let problem = match envelope.payload.source_kind {
                // One alert of a group: name which.
                AlertSourceKind::Alertmanager => {
                    alert_too_large(&err).at(format!("/alerts/{index}"))
                }
                AlertSourceKind::SplunkAlertAction | AlertSourceKind::SplunkWebhook => {
                    alert_too_large(&err)
                }
            };
            Some(refuse("alert_too_large", problem))
        })
}

/// The `413` for an alert the bus can never store; retrying it cannot help.
fn alert_too_large(err: &BusError) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "alert-too-large",
        "Alert too large for the bus",
        format!("{err}; send fewer or shorter rows, or raise the limit"),
    )
}

/// Publishes every alert; `503` unless the bus acknowledged all of them in time (`413` if the
/// broker refused one as too large).
async fn publish_all(state: &State, messages: Vec<Outgoing>) -> Result<(), Refusal> {
    let publishes = messages
        .into_iter()
        .map(|message| state.publisher.publish_raw(message));
    match tokio::time::timeout(
        state.config.publish_timeout,
        futures::future::try_join_all(publishes),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err @ BusError::TooLarge { .. })) => {
            Err(refuse("alert_too_large", alert_too_large(&err)))
        }
        Ok(Err(err)) => Err(unavailable(state, err.to_string())),
        Err(_) => Err(unavailable(
            state,
            format!(
                "the bus did not acknowledge within {:?}",
                state.config.publish_timeout
            ),
        )),
    }
}
