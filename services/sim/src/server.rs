//! The simulator's HTTP server: Kubernetes API (with discovery), ArgoCD REST (`/argocd/api/v1`
//! and `/api/v1/applications`), OpenCost (`/allocation/compute`, also under `/opencost`) and
//! the control endpoints under `/_sim`.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, http::StatusCode, web,
};
use serde_json::{Value, json};

use crate::{
    Simulator,
    duration::{format_duration, parse_duration},
    resources::{self, ResourceDef},
    scenario::{Api, FaultSpec},
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
    world::{Caller, PatchType},
};

/// A running simulator server.
pub struct SimServer {
    addr: SocketAddr,
    handle: ServerHandle,
    argocd_token: String,
    kube_token: Option<String>,
}

impl SimServer {
    /// Binds `addr` (port 0 picks one) and serves `sim` on the current Tokio runtime.
    pub fn start(sim: Simulator, addr: SocketAddr) -> std::io::Result<Self> {
        let (argocd_token, kube_token) =
            sim.with_world(|w| (w.config.argocd_token.clone(), w.config.kube_token.clone()));
        let data = web::Data::new(sim);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(8 << 20))
                .default_service(web::to(dispatch))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)?;
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            addr,
            handle,
            argocd_token,
            kube_token,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Kubernetes API server URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn argocd_url(&self) -> String {
        format!("http://{}/argocd", self.addr)
    }

    pub fn argocd_token(&self) -> &str {
        &self.argocd_token
    }

    pub fn opencost_url(&self) -> String {
        format!("http://{}/opencost", self.addr)
    }

    /// A kubeconfig that points kubectl or kube-rs at the simulator.
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        let user = match &self.kube_token {
            Some(t) => format!("    token: {t}\n"),
            None => "    username: opsmesh\n".into(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: opsmesh-sim\n  cluster:\n    server: {url}\ncontexts:\n- name: opsmesh-sim\n  context:\n    cluster: opsmesh-sim\n    user: opsmesh-sim\n    namespace: {namespace}\ncurrent-context: opsmesh-sim\nusers:\n- name: opsmesh-sim\n  user:\n{user}",
            url = self.url()
        )
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn json_response(code: u16, body: &Value) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body.to_string())
}

fn status_response(e: &ApiError) -> HttpResponse {
    json_response(e.code, &e.to_status())
}

fn query_of(req: &HttpRequest) -> BTreeMap<String, String> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner().into_iter().collect())
        .unwrap_or_default()
}

fn bearer(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned())
}

async fn dispatch(req: HttpRequest, body: web::Bytes, sim: web::Data<Simulator>) -> HttpResponse {
    let path = req.path().to_owned();
    let query = query_of(&req);
    if let Some(rest) = path.strip_prefix("/_sim") {
        return control(&req, rest, &query, &body, &sim);
    }
    let argocd_path = path.strip_prefix("/argocd").or_else(|| {
        (path.starts_with("/api/v1/applications") || path == "/api/version")
            .then_some(path.as_str())
    });
    if let Some(rest) = argocd_path {
        if sim.with_world(|w| w.outage(Api::Argocd)).is_some() {
            // gRPC code 14: Unavailable, as argocd-server's gateway maps it.
            return argo_error(503, 14, "the ArgoCD API server is unavailable");
        }
        return argocd(&req, rest, &query, &body, &sim);
    }
    let cost_path = path.strip_prefix("/opencost").unwrap_or(&path);
    if matches!(
        cost_path,
        "/allocation" | "/allocation/compute" | "/model/allocation" | "/model/allocation/compute"
    ) {
        if sim.with_world(|w| w.outage(Api::Opencost)).is_some() {
            return json_response(
                503,
                &json!({"code": 503, "status": "error", "message": "OpenCost is unavailable"}),
            );
        }
        let (code, value) = sim.with_world(|w| crate::opencost::allocation(w, &query));
        return json_response(code, &value);
    }
    if sim.with_world(|w| w.outage(Api::Kubernetes)).is_some() {
        return kube_unavailable(&req, &path, &query, &body, &sim);
    }
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return HttpResponse::Ok().content_type("text/plain").body("ok");
    }
    if path == "/version" {
        return json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-opsmesh-sim", "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        );
    }
    kube(&req, &path, &query, &body, &sim)
}

// ---- Kubernetes ----

/// `api_outage`: every Kubernetes request, health and discovery included, answers 503 with
/// the `Status` kube-apiserver sends. Refused writes are logged, so a test sees the attempts.
fn kube_unavailable(
    req: &HttpRequest,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    sim: &Simulator,
) -> HttpResponse {
    let error = ApiError::service_unavailable();
    let method = req.method().as_str();
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
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
    let find = |plural: &str| {
        resources::find(group, version, plural)
            .ok_or_else(|| ApiError::path_not_found(&segs.join("/")))
    };
    let t = match rest {
        [] => return Ok(None),
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let def = find(plural)?;
            if !def.namespaced {
                return Err(ApiError::path_not_found(&segs.join("/")));
            }
            match tail {
                [] => Target {
                    def,
                    namespace: Some((*ns).into()),
                    name: None,
                    subresource: None,
                },
                [name] => Target {
                    def,
                    namespace: Some((*ns).into()),
                    name: Some((*name).into()),
                    subresource: None,
                },
                [name, sub] => Target {
                    def,
                    namespace: Some((*ns).into()),
                    name: Some((*name).into()),
                    subresource: Some(*sub),
                },
                _ => return Err(ApiError::path_not_found(&segs.join("/"))),
            }
        }
        [plural] => Target {
            def: find(plural)?,
            namespace: None,
            name: None,
            subresource: None,
        },
        [plural, name] => {
            let def = find(plural)?;
            if def.namespaced {
                return Err(ApiError::path_not_found(&segs.join("/")));
            }
            Target {
                def,
                namespace: None,
                name: Some((*name).into()),
                subresource: None,
            }
        }
        [plural, name, sub] => {
            let def = find(plural)?;
            if def.namespaced {
                return Err(ApiError::path_not_found(&segs.join("/")));
            }
            Target {
                def,
                namespace: None,
                name: Some((*name).into()),
                subresource: Some(*sub),
            }
        }
        _ => return Err(ApiError::path_not_found(&segs.join("/"))),
    };
    if let Some(sub) = t.subresource
        && !(sub == "status" && t.def.status_subresource)
    {
        return Err(ApiError::path_not_found(&segs.join("/")));
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

fn kube(
    req: &HttpRequest,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    sim: &Simulator,
) -> HttpResponse {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
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

fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn caller_of(req: &HttpRequest, query: &BTreeMap<String, String>) -> Caller {
    Caller {
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        field_manager: query.get("fieldManager").cloned(),
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        force: query.get("force").is_some_and(|f| f == "true"),
    }
}

// ---- ArgoCD ----

fn argo_error(code: u16, grpc: u32, message: &str) -> HttpResponse {
    json_response(
        code,
        &json!({"error": message, "code": grpc, "message": message}),
    )
}

fn argocd(
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
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
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
            world.record(
                "argocd",
                verb,
                resources::APPLICATIONS.qualified(),
                None,
                resources::ARGOCD_NAMESPACE,
                name,
                &caller,
                None,
                body,
                401,
            );
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
            world.record(
                "argocd",
                "sync",
                resources::APPLICATIONS.qualified(),
                None,
                resources::ARGOCD_NAMESPACE,
                name,
                &caller,
                None,
                body_json,
                code,
            );
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
            world.record(
                "argocd",
                "rollback",
                resources::APPLICATIONS.qualified(),
                None,
                resources::ARGOCD_NAMESPACE,
                name,
                &caller,
                None,
                body_json,
                code,
            );
            match result {
                Ok(app) => json_response(200, &app),
                Err((c, m)) => argo_error(c, if c == 404 { 5 } else { 3 }, &m),
            }
        }
        _ => argo_error(404, 5, &format!("Not Found: {method} {path}")),
    }
}

// ---- control ----

fn control(
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
