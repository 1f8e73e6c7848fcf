//! Test support shared by the services' tests and the end-to-end tests (`opsmesh-tests`): a
//! Splunk HEC test server that speaks the protocol, a Splunk REST export server and a Splunk MCP
//! server serving fixture rows, a scripted OpenAI-compatible model, headless Chromium for the console's
//! browser tests, a firing alert to start an incident with, and [`eventually`].

pub mod browser;
pub mod hec;
pub mod openai;
pub mod splunk_export;
pub mod splunk_mcp;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use chrono::Utc;
use opsmesh_proto::{
    Severity,
    alert::{Alert, AlertSourceKind, AlertStatus, Entity, EntityKind},
};

/// Serves the routes `configure` adds on a free loopback port (one worker, on the current
/// Tokio runtime, for the rest of the test); the base URL. `what` names it in a bind failure.
pub(crate) fn serve_on_loopback(
    what: &str,
    configure: impl Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("bind the {what}: {e}"));
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listen")
            .run();
    tokio::spawn(server);
    url
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Splunk alert action's alert, firing now about InferenceService `namespace/name`.
pub fn firing_alert(fingerprint: &str, namespace: &str, name: &str) -> Alert {
    Alert {
        source_kind: AlertSourceKind::SplunkAlertAction,
        source: "splunk".into(),
        name: "KServe model error rate above 5%".into(),
        status: AlertStatus::Firing,
        severity: Severity::High,
        fingerprint: fingerprint.into(),
        sid: None,
        app: None,
        owner: None,
        results_link: None,
        rows: vec![],
        rows_truncated: false,
        labels: Default::default(),
        annotations: Default::default(),
        entity: Entity {
            namespace: Some(namespace.into()),
            kind: Some(EntityKind::Inferenceservice),
            name: Some(name.into()),
            ..Entity::default()
        },
        starts_at: None,
        received_at: Utc::now(),
    }
}
