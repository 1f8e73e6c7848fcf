//! The Kubernetes API: routing a path to a resource, discovery, the verbs with RBAC and
//! selectors, pod logs, and the `api_outage` answer.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::{
    Simulator,
    resources::{self, ResourceDef},
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
    world::PatchType,
};

use super::{bearer, caller_of, content_type, json_response, path_segments, status_response};

/// `api_outage`: every Kubernetes request, health and discovery included, answers 503 with
/// the `Status` kube-apiserver sends. Refused writes are logged, so a test sees the attempts.
pub(super) fn kube_unavailable(
    req: &HttpRequest,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    sim: &Simulator,
) -> HttpResponse {
    let error = ApiError::service_unavailable();
    let method = req.method().as_str();
    let segs = path_segments(path);
    if let Ok(Some(target)) = route(&segs)
        && let Some(verb) = match (method, target.name.is_some()) {
            ("POST", false) => Some("create"),
            ("PUT", true) => Some("update"),
            ("PATCH", true) => Some("patch"),
            ("DELETE", true) => Some("delete"),
            ("DELETE", false) => Some("deletecollection"),
            _ => None,
        }
    {
        let ct = content_type(req);
        let body = parse_body(body, &ct).unwrap_or(Value::Null);
        let patch = (verb == "patch")
            .then(|| PatchType::from_content_type(&ct))
            .flatten();
        sim.with_world(|w| {
            w.record(
                "kubernetes",
                verb,
                target.def.qualified(),
                target.subresource.map(str::to_owned),
                target.namespace.as_deref().unwrap_or_default(),
                target.name.as_deref().unwrap_or_default(),
                &caller_of(req, query),
                patch,
                body,
                error.code,
            );
        });
    }
    status_response(&error)
}

struct Target<'a> {
    def: &'static ResourceDef,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<&'a str>,
}

fn route<'a>(segs: &[&'a str]) -> Result<Option<Target<'a>>, ApiError> {
    let (group, version, rest): (&str, &str, &[&str]) = match segs {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Ok(None),
    };
    let not_found = || ApiError::path_not_found(&segs.join("/"));
    let (namespace, plural, tail): (Option<&str>, &str, &[&'a str]) = match rest {
        [] => return Ok(None),
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(ns), plural, tail)
        }
        [plural, tail @ ..] => (None, plural, tail),
    };
    let def = resources::find(group, version, plural).ok_or_else(not_found)?;
    // A namespaced kind is named only inside its namespace (listing it across all namespaces
    // is allowed); a cluster-scoped kind never has one.
    let misplaced = match namespace {
        Some(_) => !def.namespaced,
        None => def.namespaced && !tail.is_empty(),
    };
    if misplaced || tail.len() > 2 {
        return Err(not_found());
    }
    let t = Target {
        def,
        namespace: namespace.map(str::to_owned),
        name: tail.first().map(|name| (*name).to_owned()),
        subresource: tail.get(1).copied(),
    };
    if let Some(sub) = t.subresource
        && !(sub == "status" && t.def.status_subresource)
        && !(sub == "log" && t.def.group.is_empty() && t.def.plural == "pods")
    {
        return Err(not_found());
    }
    Ok(Some(t))
}

fn discovery(segs: &[&str]) -> Option<Value> {
    match segs {
        ["api"] => Some(resources::core_versions()),
        ["api", "v1"] => resources::resource_list("", "v1"),
        ["apis"] => Some(resources::group_list()),
        ["apis", g] => resources::group(g),
        ["apis", g, v] => resources::resource_list(g, v),
        _ => None,
    }
}

fn parse_body(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) if content_type.contains("yaml") => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text).map_err(|y| {
                ApiError::bad_request(format!("error decoding YAML: {y} (as JSON: {e})"))
            })
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {e}"
        ))),
    }
}

pub(super) fn kube(
    req: &HttpRequest,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    sim: &Simulator,
) -> HttpResponse {
    let segs = path_segments(path);
    let mut world = sim.world();
    if let Some(token) = &world.config.kube_token
        && bearer(req).as_deref() != Some(token.as_str())
    {
        return status_response(&ApiError::unauthorized());
    }
    if req.method() == actix_web::http::Method::GET
        && let Some(doc) = discovery(&segs)
    {
        return json_response(200, &doc);
    }
    let target = match route(&segs) {
        Ok(Some(t)) => t,
        Ok(None) => return status_response(&ApiError::path_not_found(path)),
        Err(e) => return status_response(&e),
    };
    let method = req.method().as_str().to_owned();
    let verb = match (method.as_str(), target.name.is_some()) {
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => {
            return status_response(&ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )));
        }
    };
    if verb == "list" && query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return status_response(&ApiError::method_not_allowed(
            "watch is not supported by the simulator; list instead",
        ));
    }
    let def = target.def;
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let caller = caller_of(req, query);
    let ct = content_type(req);
    let log =
        |world: &mut crate::World, verb: &str, patch: Option<PatchType>, body: Value, status| {
            world.record(
                "kubernetes",
                verb,
                def.qualified(),
                target.subresource.map(str::to_owned),
                &ns,
                &name,
                &caller,
                patch,
                body,
                status,
            );
        };
    if let Some(rbac) = world.config.rbac.clone()
        && !rbac.allows(verb, def, target.subresource, target.namespace.as_deref())
    {
        let e = ApiError::forbidden(
            Some(def),
            &name,
            rbac.message(
                verb,
                def,
                target.subresource,
                target.namespace.as_deref(),
                &name,
            ),
        );
        // Refused reads are logged too: an RBAC test must see every call the Role lacks.
        let body = parse_body(body, &ct).unwrap_or(Value::Null);
        log(
            &mut world,
            verb,
            PatchType::from_content_type(&ct),
            body,
            403,
        );
        return status_response(&e);
    }
    if target.subresource == Some("log") {
        if verb != "get" {
            return status_response(&ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )));
        }
        return match world.pod_log(&ns, &name, query) {
            Ok(text) => HttpResponse::Ok().content_type("text/plain").body(text),
            Err(e) => status_response(&e),
        };
    }
    if let Some(dr) = query.get("dryRun")
        && dr != "All"
    {
        return status_response(&ApiError::bad_request(format!(
            "dryRun: Unsupported value: {dr:?}: supported values: \"All\""
        )));
    }
    let status_only = target.subresource == Some("status");
    let labels = match query
        .get("labelSelector")
        .map(|s| LabelSelector::parse(s))
        .transpose()
    {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => return status_response(&ApiError::bad_request(e)),
    };
    let fields = match query
        .get("fieldSelector")
        .map(|s| FieldSelector::parse(s))
        .transpose()
    {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return status_response(&ApiError::bad_request(e)),
    };
    let parsed = if matches!(verb, "create" | "update" | "patch")
        || (verb == "delete" && !body.is_empty())
    {
        match parse_body(body, &ct) {
            Ok(v) => Some(v),
            Err(e) => {
                log(
                    &mut world,
                    verb,
                    PatchType::from_content_type(&ct),
                    Value::Null,
                    e.code,
                );
                return status_response(&e);
            }
        }
    } else {
        None
    };
    let patch_type = PatchType::from_content_type(&ct);
    let result: Result<(u16, Value), ApiError> = match verb {
        "list" => world.list(def, target.namespace.as_deref(), &labels, &fields).map(|v| (200, v)),
        "get" => world.get(def, &ns, &name).map(|v| (200, v)),
        "create" => {
            if def.namespaced && target.namespace.is_none() {
                Err(ApiError::method_not_allowed("create needs a namespace in the path"))
            } else {
                world
                    .create(def, &ns, parsed.clone().unwrap_or_default(), &caller)
                    .map(|v| (201, v))
            }
        }
        "update" => world
            .replace(def, &ns, &name, status_only, parsed.clone().unwrap_or_default(), &caller)
            .map(|v| (200, v)),
        "patch" => match patch_type {
            None => Err(ApiError::unsupported_media_type(&ct)),
            Some(kind) => {
                let existed = world.get_obj(def, &ns, &name).is_some();
                world
                    .patch(def, &ns, &name, status_only, kind, parsed.clone().unwrap_or_default(), &caller)
                    .map(|v| (if existed { 200 } else { 201 }, v))
            }
        },
        "delete" => world
            .delete(def, &ns, &name, parsed.as_ref().unwrap_or(&Value::Null), &caller)
            .map(|v| (200, v)),
        "deletecollection" => world.list(def, target.namespace.as_deref(), &labels, &fields).and_then(|list| {
            let mut deleted = Vec::new();
            for item in list["items"].as_array().cloned().unwrap_or_default() {
                let n = item["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let item_ns = item["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
                deleted.push(world.delete(def, &item_ns, &n, &Value::Null, &caller)?);
            }
            Ok((200, json!({"kind": def.list_kind(), "apiVersion": def.api_version(), "metadata": {}, "items": deleted})))
        }),
        _ => unreachable!("verbs are matched above"),
    };
    let code = match &result {
        Ok((c, _)) => *c,
        Err(e) => e.code,
    };
    if !matches!(verb, "get" | "list") {
        let logged_verb = if patch_type == Some(PatchType::Apply) && verb == "patch" {
            "apply"
        } else {
            verb
        };
        log(
            &mut world,
            logged_verb,
            if verb == "patch" { patch_type } else { None },
            parsed.unwrap_or(Value::Null),
            code,
        );
        if code < 300 && !caller.dry_run {
            world.note_write();
        }
    }
    match result {
        Ok((c, v)) => json_response(c, &v),
        Err(e) => status_response(&e),
    }
}
