//! The ArgoCD REST API: list and get Applications, sync and rollback, with argocd-server's
//! error bodies.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::{Simulator, World, resources, selector::LabelSelector, world::Caller};

use super::{bearer, caller_of, json_response, path_segments};

pub(super) fn argo_error(code: u16, grpc: u32, message: &str) -> HttpResponse {
    json_response(
        code,
        &json!({"error": message, "code": grpc, "message": message}),
    )
}

/// Logs a call to an Application's `sync` or `rollback`.
fn record_application_call(
    world: &mut World,
    verb: &str,
    name: &str,
    caller: &Caller,
    body: Value,
    status: u16,
) {
    world.record(
        "argocd",
        verb,
        resources::APPLICATIONS.qualified(),
        None,
        resources::ARGOCD_NAMESPACE,
        name,
        caller,
        None,
        body,
        status,
    );
}

pub(super) fn argocd(
    req: &HttpRequest,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    sim: &Simulator,
) -> HttpResponse {
    let mut world = sim.world();
    if path == "/api/version" {
        return json_response(200, &json!({"Version": "v2.14.0+opsmesh-sim"}));
    }
    let segs = path_segments(path);
    let method = req.method().as_str();
    let caller = caller_of(req, query);
    if bearer(req).as_deref() != Some(world.config.argocd_token.as_str()) {
        if let [
            "api",
            "v1",
            "applications",
            name,
            verb @ ("sync" | "rollback"),
        ] = segs.as_slice()
            && method != "GET"
        {
            let body = serde_json::from_slice(body).unwrap_or(Value::Null);
            record_application_call(&mut world, verb, name, &caller, body, 401);
        }
        return argo_error(401, 16, "no session information");
    }
    let body_json: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return argo_error(400, 3, &format!("invalid request body: {e}")),
        }
    };
    match (method, segs.as_slice()) {
        ("GET", ["api", "v1", "applications"]) => {
            world.reconcile();
            let selector = match query
                .get("selector")
                .map(|s| LabelSelector::parse(s))
                .transpose()
            {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => return argo_error(400, 3, &e),
            };
            let items: Vec<Value> = world
                .objects_of(&resources::APPLICATIONS, None)
                .filter(|a| selector.matches(a["metadata"].get("labels")))
                .filter(|a| {
                    query
                        .get("name")
                        .is_none_or(|n| a["metadata"]["name"] == n.as_str())
                })
                .cloned()
                .collect();
            let rv = world.resource_version().to_string();
            json_response(
                200,
                &json!({"metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        ("GET", ["api", "v1", "applications", name]) => {
            match world.get(&resources::APPLICATIONS, resources::ARGOCD_NAMESPACE, name) {
                Ok(app) => json_response(200, &app),
                Err(_) => argo_error(
                    404,
                    5,
                    &format!("applications.argoproj.io {name:?} not found"),
                ),
            }
        }
        ("POST", ["api", "v1", "applications", name, "sync"]) => {
            let dry_run = body_json["dryRun"].as_bool().unwrap_or(false);
            let revision = body_json["revision"].as_str().map(str::to_owned);
            let caller = Caller { dry_run, ..caller };
            let result = world.argo_sync(name, revision.as_deref(), dry_run);
            let code = if result.is_some() { 200 } else { 404 };
            record_application_call(&mut world, "sync", name, &caller, body_json, code);
            match result {
                Some(app) => json_response(200, &app),
                None => argo_error(
                    404,
                    5,
                    &format!("applications.argoproj.io {name:?} not found"),
                ),
            }
        }
        ("POST" | "PUT", ["api", "v1", "applications", name, "rollback"]) => {
            let dry_run = body_json["dryRun"].as_bool().unwrap_or(false);
            let caller = Caller { dry_run, ..caller };
            let id = match &body_json["id"] {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            let result = match id {
                Some(id) => world.argo_rollback(name, id, dry_run),
                None => Err((400, "rollback needs a history id".to_owned())),
            };
            let code = result.as_ref().map_or_else(|(c, _)| *c, |_| 200);
            record_application_call(&mut world, "rollback", name, &caller, body_json, code);
            match result {
                Ok(app) => json_response(200, &app),
                Err((c, m)) => argo_error(c, if c == 404 { 5 } else { 3 }, &m),
            }
        }
        _ => argo_error(404, 5, &format!("Not Found: {method} {path}")),
    }
}
