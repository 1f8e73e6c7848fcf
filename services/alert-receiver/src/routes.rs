//! HTTP endpoints.

use std::{sync::Arc, time::Instant};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use futures::StreamExt;
use serde_json::{Value, json};

use opsmesh_proto::{Envelope, alert::Alert};
use opsmesh_runtime::{Publisher, problem::Problem};

use crate::{config::ReceiverConfig, json_depth, metrics::ReceiverMetrics, normalize::Normalizer};

pub struct State {
    pub config: ReceiverConfig,
    pub publisher: Publisher,
    pub metrics: ReceiverMetrics,
    pub cluster: String,
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

pub fn configure(config: &mut web::ServiceConfig, state: Arc<State>) {
    config.service(
        web::scope("/v1/alerts")
            .app_data(web::Data::from(state))
            .route("/splunk", web::post().to(splunk))
            .route("/alertmanager", web::post().to(alertmanager)),
    );
}

/// Reads the body up to `limit` bytes: `413` beyond it, before buffering the excess.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, Refusal> {
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
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| match err {
            actix_web::error::PayloadError::Overflow => too_large(),
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
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn splunk(
    state: web::Data<State>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    accept(&state, Format::Splunk, &request, payload).await
}

async fn alertmanager(
    state: web::Data<State>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    accept(&state, Format::Alertmanager, &request, payload).await
}

async fn accept(
    state: &State,
    format: Format,
    request: &HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let metrics = &state.metrics;
    metrics.received.with_label_values(&[format.label()]).inc();
    metrics.in_flight.inc();
    let started = Instant::now();
    let result = match read_body(payload, state.config.max_body_bytes).await {
        Ok(body) => parse_and_publish(state, format, request, &body).await,
        Err(refusal) => Err(refusal),
    };
    metrics.in_flight.dec();
    match result {
        Ok((alerts, response)) => {
            metrics
                .publish_seconds
                .with_label_values(&[format.label()])
                .observe(started.elapsed().as_secs_f64());
            for alert in &alerts {
                metrics
                    .accepted
                    .with_label_values(&[format.label(), &alert.payload.source])
                    .inc();
            }
            HttpResponse::Accepted().json(response)
        }
        Err(Refusal { reason, problem }) => {
            metrics
                .rejected
                .with_label_values(&[format.label(), reason])
                .inc();
            tracing::info!(format = format.label(), reason, detail = %problem.detail, "alert refused");
            problem.response()
        }
    }
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

async fn parse_and_publish(
    state: &State,
    format: Format,
    request: &HttpRequest,
    body: &[u8],
) -> Result<(Vec<Envelope<Alert>>, Value), Refusal> {
    check_content_type(request)?;
    let value = parse_json(body, state.config.max_depth)?;
    let normalizer = Normalizer {
        fields: &state.config.entity_fields,
        max_rows: state.config.max_rows,
        default_cluster: &state.cluster,
        source_name: &state.config.source_name,
    };
    let alerts = match format {
        Format::Splunk => vec![
            normalizer
                .splunk(value, false)
                .map_err(|p| refuse("invalid", p))?,
        ],
        Format::Alertmanager => normalizer
            .alertmanager(value)
            .map_err(|p| refuse("invalid", p))?,
    };
    let envelopes: Vec<Envelope<Alert>> = alerts
        .into_iter()
        .map(|alert| {
            let cluster = alert
                .entity
                .cluster
                .clone()
                .unwrap_or_else(|| state.cluster.clone());
            let incident = alert.fingerprint.clone();
            Envelope::new("opsmesh-alert-receiver", cluster, Some(incident), alert)
        })
        .collect();
    publish_all(state, &envelopes).await?;
    let response = json!({
        "alert_ids": envelopes.iter().map(|e| e.id).collect::<Vec<_>>(),
        "incident_key": envelopes.first().and_then(|e| e.incident_id.clone()),
        "incident_keys": envelopes.iter().filter_map(|e| e.incident_id.clone()).collect::<Vec<_>>(),
    });
    Ok((envelopes, response))
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
        .to_ascii_lowercase();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
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

fn parse_json(body: &[u8], max_depth: usize) -> Result<Value, Refusal> {
    let bad = |detail: String| {
        refuse(
            "malformed",
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "The body is not valid JSON",
                detail,
            ),
        )
    };
    if let Some(offset) = json_depth::exceeds(body, max_depth) {
        return Err(bad(format!(
            "nesting deeper than {max_depth} levels at byte {offset}"
        )));
    }
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("body is not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| bad(e.to_string()))
}

/// Publishes every alert; `503` unless the bus acknowledged all of them in time.
async fn publish_all(state: &State, envelopes: &[Envelope<Alert>]) -> Result<(), Refusal> {
    let unavailable = |detail: String| {
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
    };
    let publishes = envelopes.iter().map(|envelope| {
        let key = envelope.incident_id.clone().unwrap_or_default();
        async move { state.publisher.publish(&key, envelope).await }
    });
    match tokio::time::timeout(
        state.config.publish_timeout,
        futures::future::try_join_all(publishes),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(unavailable(err.to_string())),
        Err(_) => Err(unavailable(format!(
            "the bus did not acknowledge within {:?}",
            state.config.publish_timeout
        ))),
    }
}
