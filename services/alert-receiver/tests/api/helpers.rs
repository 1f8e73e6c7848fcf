use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use serde_json::Value;

use opsmesh_alert_receiver::{
    Receiver, ReceiverConfig, SIGNATURE_HEADER, config::SourceConfig, sign,
};
use opsmesh_proto::topics;
use opsmesh_runtime::{
    Application, Bus, Context, Settings,
    bus::{BusError, Delivered, MemoryBus, MemorySettings, Outgoing, Subscription},
    settings::HttpSettings,
};

pub const SECRET: &str = "splunk-secret-current";
pub const OLD_SECRET: &str = "splunk-secret-previous";
pub const BEARER: &str = "alertmanager-bearer-token";
pub const PATH_TOKEN: &str = "webhook-path-token";

/// A memory bus that can be switched off, to play a broker outage, and given a message size
/// limit as Kafka's producer has (0: none).
#[derive(Clone)]
pub struct SwitchableBus {
    pub inner: MemoryBus,
    pub down: Arc<AtomicBool>,
    pub max_message_bytes: Arc<AtomicUsize>,
}

#[async_trait]
impl Bus for SwitchableBus {
    async fn publish(&self, message: Outgoing) -> Result<Delivered, BusError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BusError::Publish {
                topic: message.topic.into_owned(),
                message: "broker unreachable".into(),
            });
        }
        self.inner.publish(message).await
    }
    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(group, topics).await
    }
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        self.inner.ensure_topics(topics).await
    }
    async fn check(&self) -> Result<(), BusError> {
        self.inner.check().await
    }
    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.inner.flush(timeout).await
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.max_message_bytes.load(Ordering::SeqCst)).filter(|&limit| limit > 0)
    }
}

pub struct TestApp {
    pub base: String,
    /// The receiver's listener, for raw TCP.
    pub addr: std::net::SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`: the admin listener.
    pub admin: String,
    pub bus: SwitchableBus,
    pub secrets_file: PathBuf,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the receiver on a free port with sources `splunk` (signing secrets in a file,
/// path token) and `alertmanager` (bearer), after `adjust` edits the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ReceiverConfig)) -> TestApp {
    spawn_app_with_http(adjust, |_| {}).await
}

/// As [`spawn_app_with`], after `http` edits the HTTP server's settings too.
pub async fn spawn_app_with_http(
    adjust: impl FnOnce(&mut ReceiverConfig),
    http: impl FnOnce(&mut HttpSettings),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let secrets_file = dir.path().join("splunk.secrets");
    std::fs::write(&secrets_file, format!("{SECRET}\n{OLD_SECRET}\n")).unwrap();
    let bearer_file = dir.path().join("am.tokens");
    std::fs::write(&bearer_file, BEARER).unwrap();
    let path_file = dir.path().join("path.token");
    std::fs::write(&path_file, PATH_TOKEN).unwrap();

    let mut config = ReceiverConfig::default();
    config.sources.insert(
        "splunk".into(),
        SourceConfig {
            secrets_file: Some(secrets_file.clone()),
            path_token_file: Some(path_file),
            ..SourceConfig::default()
        },
    );
    config.sources.insert(
        "alertmanager".into(),
        SourceConfig {
            bearer_tokens_file: Some(bearer_file),
            ..SourceConfig::default()
        },
    );
    config.publish_timeout = Duration::from_millis(300);
    adjust(&mut config);

    let mut settings = Settings {
        cluster: "test-cluster".into(),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.http.admin_listen = "127.0.0.1:0".parse().unwrap();
    settings.shutdown.grace = Duration::from_secs(2);
    http(&mut settings.http);
    let bus = SwitchableBus {
        inner: MemoryBus::new(&MemorySettings::default()),
        down: Arc::new(AtomicBool::new(false)),
        max_message_bytes: Arc::new(AtomicUsize::new(0)),
    };
    let ctx = Context::new(settings, Arc::new(bus.clone()));
    let receiver = Receiver::new(config, &ctx).expect("receiver builds");
    let app = Application::build(ctx, vec![Arc::new(receiver)]).expect("binds");
    let app_addr = app.local_addr();
    let base = format!("http://{app_addr}");
    let admin = format!("http://{}", app.admin_addr());
    let stop = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        addr: app_addr,
        base,
        admin,
        bus,
        secrets_file,
        client: reqwest::Client::new(),
        _dir: dir,
        _stop: stop.drop_guard(),
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn sample(name: &str) -> Value {
    let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../../tests/samples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The Prometheus exposition from the admin listener.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/metrics on the admin listener");
        response.text().await.unwrap()
    }

    /// Posts raw bytes signed with `secret` at time `t`.
    pub async fn post_signed_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
        secret: &str,
        t: i64,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, sign(secret, t, &body))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_signed(&self, body: &Value) -> reqwest::Response {
        self.post_signed_bytes(
            "/v1/alerts/splunk",
            serde_json::to_vec(body).unwrap(),
            SECRET,
            now(),
        )
        .await
    }

    /// Every message on the alerts topic.
    pub fn published(&self) -> Vec<Value> {
        self.bus
            .inner
            .snapshot(topics::ALERTS)
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    }
}

/// The value of the sample `name{labels}` (labels in the exposition's order), 0 if absent.
pub fn sample_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Status and parsed body; asserts the problem content type on errors.
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    if status >= 400 {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            content_type, "application/problem+json",
            "problem details on {status}"
        );
    }
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}
