//! What the reporter's tests share: the HEC test server (from opsmesh-testkit), incidents to
//! publish, and the reporter run through its library API on the in-memory bus.

#![allow(dead_code)]

pub mod console;
pub mod incident;
pub mod investigation;
pub mod mcp;
pub mod receivers;

use std::{collections::HashSet, net::SocketAddr, sync::Arc};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use opsmesh_proto::topics;
use opsmesh_runtime::{
    Bus, ConfigTree,
    bus::{MemoryBus, Outgoing},
    launcher,
};

#[allow(unused_imports)]
pub use opsmesh_testkit::{
    eventually,
    hec::{HecServer, Mode},
};

/// The reporter's consumer group with the default prefix.
pub const GROUP: &str = "opsmesh-reporter";

const EXAMPLES: [(&str, &str); 3] = [
    (
        topics::ALERTS,
        include_str!("../../../../proto/examples/opsmesh.alerts.v1.json"),
    ),
    (
        topics::DIAGNOSES,
        include_str!("../../../../proto/examples/opsmesh.diagnoses.v1.json"),
    ),
    (
        topics::REMEDIATIONS,
        include_str!("../../../../proto/examples/opsmesh.remediations.v1.json"),
    ),
];

/// One message on the bus.
#[derive(Clone)]
pub struct Published {
    pub topic: &'static str,
    pub id: String,
    pub incident: String,
    pub bytes: Vec<u8>,
}

/// The alert, diagnosis and remediation of `count` fresh incidents (golden examples with
/// new ids), as compact JSON like the producers write.
pub fn incidents(count: usize) -> Vec<Published> {
    let mut out = Vec::with_capacity(count * 3);
    for _ in 0..count {
        let incident = Uuid::new_v4().simple().to_string();
        for (topic, example) in EXAMPLES {
            let mut envelope: Value = serde_json::from_str(example).unwrap();
            let id = Uuid::now_v7().to_string();
            envelope["id"] = Value::String(id.clone());
            envelope["incident_id"] = Value::String(incident.clone());
            envelope["occurred_at"] = Value::String(chrono_now());
            out.push(Published {
                topic,
                id,
                incident: incident.clone(),
                bytes: serde_json::to_vec(&envelope).unwrap(),
            });
        }
    }
    out
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn publish(bus: &MemoryBus, messages: &[Published]) {
    for m in messages {
        bus.publish(Outgoing {
            topic: m.topic.into(),
            key: m.incident.clone(),
            payload: m.bytes.clone(),
            headers: vec![
                ("content-type".into(), b"application/json".into()),
                ("opsmesh-schema".into(), m.topic.as_bytes().to_vec().into()),
            ],
        })
        .await
        .unwrap();
    }
}

pub fn ids(messages: &[Published]) -> HashSet<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

pub fn memory_bus() -> MemoryBus {
    MemoryBus::new(&opsmesh_runtime::bus::MemorySettings::default())
}

/// A reporter application (HTTP health/metrics + the HEC writer) on a shared bus.
pub struct RunningReporter {
    /// The reporter's own endpoints (console, MCP).
    pub addr: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

/// The key test reporters sign approvals with (the remediator would hold its public half).
pub fn approval_key() -> &'static opsmesh_runtime::signing::KeyPair {
    static KEY: std::sync::OnceLock<opsmesh_runtime::signing::KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(opsmesh_runtime::signing::KeyPair::generate)
}

impl RunningReporter {
    /// Builds it with `launcher::build` (as `opsmesh-reporter` does) on `bus`, configured
    /// for `hec` plus `extra` `OPSMESH__…` variables.
    pub async fn start(bus: &MemoryBus, hec: &HecServer, extra: &[(&str, &str)]) -> Self {
        Self::start_with_file(bus, hec, None, extra).await
    }

    /// As [`RunningReporter::start`], with a TOML configuration file under the variables.
    pub async fn start_with_file(
        bus: &MemoryBus,
        hec: &HecServer,
        file: Option<&std::path::Path>,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut env: Vec<(String, String)> = vec![
            ("OPSMESH__BUS__KIND".into(), "memory".into()),
            ("OPSMESH__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("OPSMESH__HTTP__ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
            ("OPSMESH__HTTP__WORKERS".into(), "1".into()),
            ("OPSMESH__REPORTER__HEC__URL".into(), hec.url().into()),
        ];
        if !extra.iter().any(|(k, _)| k.contains("TOKEN")) {
            env.push((
                "OPSMESH__REPORTER__HEC__TOKEN".into(),
                HecServer::TOKEN.into(),
            ));
        }
        // Every test reporter signs approvals with `approval_key`, unless the test names
        // another key, or none: `OPSMESH__REPORTER__APPROVALS__SIGNING_KEY` set to "".
        const SIGNING_KEY: &str = "OPSMESH__REPORTER__APPROVALS__SIGNING_KEY";
        if !extra.iter().any(|(k, _)| k.starts_with(SIGNING_KEY)) {
            env.push((
                format!("{SIGNING_KEY}__VALUE"),
                approval_key().private_pem(),
            ));
        }
        env.extend(
            extra
                .iter()
                .filter(|(k, v)| !(*k == SIGNING_KEY && v.is_empty()))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let tree = ConfigTree::load_with_env(file, env).expect("configuration");
        let settings = tree.settings().expect("settings");
        let app = launcher::build(
            &tree,
            settings,
            &[&opsmesh_reporter::SERVICE],
            Some(Arc::new(bus.clone()) as Arc<dyn Bus>),
        )
        .await
        .expect("reporter builds");
        let addr = app.local_addr();
        let admin = app.admin_addr();
        let stop = app.shutdown_token();
        let task =
            tokio::spawn(async move { app.run_until_stopped().await.map_err(|e| e.to_string()) });
        Self {
            addr,
            admin,
            stop,
            task,
        }
    }

    /// SIGTERM: drain within `shutdown.grace`, commit, return.
    pub async fn stop(self) -> Result<(), String> {
        self.stop.cancel();
        self.task.await.expect("reporter task")
    }

    /// SIGKILL: the task is dropped where it stands; nothing more is stored or committed.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let response = reqwest::get(format!("http://{}/readyz", self.admin))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sum of the samples of `name` whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.split(['{', ' '])
                    .next()
                    .is_some_and(|metric| metric == name)
            })
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Ids published but not indexed, and how many indexed copies beyond the first there are.
pub fn missing_and_duplicates(hec: &HecServer, published: &HashSet<String>) -> (usize, usize) {
    let counts = hec.counts();
    let missing = published
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .count();
    let duplicates = counts.values().map(|c| c.saturating_sub(1)).sum();
    (missing, duplicates)
}

pub fn topic_dlq(topic: &str) -> String {
    topics::dlq(topic)
}

/// Every message on `P`'s topic so far (a fresh group reads from the start).
pub async fn published<P: opsmesh_proto::Payload>(
    bus: &MemoryBus,
) -> Vec<opsmesh_proto::Envelope<P>> {
    let mut subscription = bus
        .subscribe(&format!("probe-{}", Uuid::new_v4()), &[P::SCHEMA])
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Ok(message)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), subscription.recv()).await
    {
        out.push(opsmesh_proto::Envelope::<P>::from_slice(&message.payload).unwrap());
    }
    out
}
