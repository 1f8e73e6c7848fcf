//! The control endpoints under `/_sim`: the request log, virtual time, fault injection and
//! the state dump.

use std::{collections::BTreeMap, time::Duration};

use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::{
    Simulator,
    duration::{format_duration, parse_duration},
    scenario::FaultSpec,
};

use super::json_response;

pub(super) fn control(
    req: &HttpRequest,
    rest: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    sim: &Simulator,
) -> HttpResponse {
    let time = |sim: &Simulator| {
        let e = sim.elapsed();
        json!({"elapsed": format_duration(e), "elapsed_ms": e.as_millis() as u64, "now": crate::clock::timestamp(sim.clock().now())})
    };
    match (req.method().as_str(), rest) {
        ("GET", "/requests") => {
            let since: u64 = query.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
            let records: Vec<_> = sim
                .requests()
                .into_iter()
                .filter(|r| r.seq > since)
                .collect();
            json_response(200, &serde_json::to_value(records).unwrap_or_default())
        }
        ("DELETE", "/requests") => {
            sim.with_world(|w| w.clear_requests());
            json_response(200, &json!({"cleared": true}))
        }
        ("GET", "/time") => json_response(200, &time(sim)),
        ("POST", "/advance") => {
            let by = query.get("by").cloned().or_else(|| {
                serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["by"].as_str().map(str::to_owned))
            });
            match by.as_deref().map(parse_duration) {
                Some(Ok(d)) => {
                    sim.advance(d);
                    json_response(200, &time(sim))
                }
                Some(Err(e)) => json_response(400, &json!({"error": e})),
                None => json_response(400, &json!({"error": "give ?by=30s"})),
            }
        }
        ("POST", "/faults") => {
            let spec: FaultSpec = match serde_json::from_slice(body) {
                Ok(s) => s,
                Err(e) => return json_response(400, &json!({"error": e.to_string()})),
            };
            match spec.resolve() {
                Ok((fault, target)) => {
                    let fault_name = fault.name();
                    let at = if spec.at.0.is_zero() {
                        sim.elapsed()
                    } else {
                        spec.at.0
                    };
                    sim.inject(at, fault, target);
                    sim.advance(Duration::ZERO);
                    json_response(
                        201,
                        &json!({"injected": fault_name, "at": format_duration(at)}),
                    )
                }
                Err(e) => json_response(400, &json!({"error": e})),
            }
        }
        ("GET", "/state") => json_response(200, &sim.with_world(|w| w.dump())),
        _ => json_response(
            404,
            &json!({"error": format!("unknown control endpoint {rest}")}),
        ),
    }
}
