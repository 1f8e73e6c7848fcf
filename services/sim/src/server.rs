//! The simulator's HTTP server: Kubernetes API (with discovery), ArgoCD REST (`/argocd/api/v1`
//! and `/api/v1/applications`), OpenCost (`/allocation/compute`, also under `/opencost`) and
//! the control endpoints under `/_sim`.
//!
//! This module holds the server, the routing between the APIs and the request helpers they
//! share; each API has a submodule.

mod argocd;
mod control;
mod kube;

use std::{collections::BTreeMap, net::SocketAddr};

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, http::StatusCode, web,
};
use serde_json::{Value, json};

use crate::{Simulator, scenario::Api, status::ApiError, world::Caller};

use argocd::{argo_error, argocd};
use control::control;
use kube::{kube, kube_unavailable};

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

/// The non-empty segments of a request path.
fn path_segments(path: &str) -> Vec<&str> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
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
