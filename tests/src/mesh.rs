//! The five services as separate OS processes on a real broker, reporting to a HEC test
//! server.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use serde_json::Value;

use opsmesh_runtime::{Bus, bus::Outgoing};

use crate::{broker::Broker, hec::HecServer, process::Service};

/// Service name → binary.
pub const SERVICES: &[(&str, &str)] = &[
    ("collector", "opsmesh-collector"),
    ("alert-receiver", "opsmesh-alert-receiver"),
    ("diagnoser", "opsmesh-diagnoser"),
    ("remediator", "opsmesh-remediator"),
    ("reporter", "opsmesh-reporter"),
];

pub struct Mesh {
    pub services: BTreeMap<&'static str, Service>,
    pub logs: tempfile::TempDir,
}

/// Consumer-group session timeout of test services.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// Publishes `count` alerts (the golden example with fresh ids, each its own incident)
/// straight onto the alerts topic; returns their envelope ids.
pub async fn publish_alerts(broker: &Broker, count: usize) -> HashSet<String> {
    let example: Value =
        serde_json::from_str(include_str!("../../proto/examples/opsmesh.alerts.v1.json"))
            .expect("example JSON");
    let bus = broker.bus();
    let mut ids = HashSet::new();
    for _ in 0..count {
        let mut envelope = example.clone();
        let id = uuid::Uuid::now_v7().to_string();
        let incident = uuid::Uuid::new_v4().simple().to_string();
        envelope["id"] = Value::String(id.clone());
        envelope["incident_id"] = Value::String(incident.clone());
        bus.publish(Outgoing {
            topic: opsmesh_proto::topics::ALERTS.into(),
            key: incident,
            payload: serde_json::to_vec(&envelope).expect("JSON"),
            headers: Vec::new(),
        })
        .await
        .expect("published");
        ids.insert(id);
    }
    ids
}

/// Envelope ids of every event HEC indexed, repeats included, in arrival order.
pub fn indexed_ids(hec: &HecServer) -> Vec<String> {
    hec.events()
        .iter()
        .filter_map(|e| e["event"]["id"].as_str().map(str::to_owned))
        .collect()
}

/// Environment every service of a test mesh gets (with the test process's approval and
/// ledger keys, see [`crate::keys`]).
pub fn base_env(broker: &Broker, hec: &HecServer) -> Vec<(&'static str, String)> {
    let keys = crate::keys::keys();
    let mut env = vec![
        ("OPSMESH__CLUSTER", "test-cluster".into()),
        ("OPSMESH__BUS__KIND", "kafka".into()),
        ("OPSMESH__BUS__KAFKA__BROKERS", broker.address()),
        ("OPSMESH__BUS__KAFKA__PARTITIONS", "3".into()),
        (
            "OPSMESH__BUS__KAFKA__SESSION_TIMEOUT",
            format!("{}s", SESSION_TIMEOUT.as_secs()),
        ),
        ("OPSMESH__SHUTDOWN__GRACE", "15s".into()),
        ("OPSMESH__REPORTER__HEC__URL", hec.url().to_owned()),
        ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN.into()),
        (
            "OPSMESH__RECEIVER__SOURCES__SPLUNK__SECRETS_ENV",
            "OPSMESH_TEST_SECRET".into(),
        ),
        ("OPSMESH_TEST_SECRET", SECRET.into()),
        // The chaos suite and the load tests send thousands of alerts from this one source,
        // in storms: far above the receiver's default rate limit, on purpose.
        (
            "OPSMESH__RECEIVER__SOURCES__SPLUNK__RATE_LIMIT_PER_SECOND",
            "10000".into(),
        ),
        (
            "OPSMESH__RECEIVER__SOURCES__SPLUNK__RATE_LIMIT_BURST",
            "10000".into(),
        ),
    ];
    env.extend(keys.remediator_env());
    env.extend(keys.reporter_env());
    env
}

/// Signing secret of the `splunk` source of test meshes.
pub const SECRET: &str = "test-signing-secret-4f1d";

/// A POST of `body` signed for the `splunk` source, as the opsmesh alert action sends it.
pub fn signed_post(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::RequestBuilder {
    let bytes = serde_json::to_vec(body).expect("JSON");
    let signature = opsmesh_alert_receiver::sign(SECRET, now(), &bytes);
    client
        .post(url)
        .header("Content-Type", "application/json")
        .header(opsmesh_alert_receiver::SIGNATURE_HEADER, signature)
        .body(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

impl Mesh {
    /// Starts every service (plus `extra` environment for named services) and waits until
    /// each answers `/readyz`.
    pub async fn start(broker: &Broker, hec: &HecServer, extra: &[(&str, &str, &str)]) -> Self {
        let logs = tempfile::tempdir().expect("log dir");
        let mut services = BTreeMap::new();
        for (name, binary) in SERVICES {
            let mut env = base_env(broker, hec);
            for (service, key, value) in extra {
                if service == name {
                    env.push((key, value.to_string()));
                }
            }
            let mut service = Service::new(name, crate::binary(binary), &[], &env, logs.path());
            service.start();
            services.insert(*name, service);
        }
        for service in services.values_mut() {
            service.wait_ready().await;
        }
        Self { services, logs }
    }

    pub fn service(&mut self, name: &str) -> &mut Service {
        self.services
            .get_mut(name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Posts a signed Splunk alert body; returns the HTTP status and the JSON reply.
    pub async fn post_splunk(&self, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        let url = self.services["alert-receiver"].url("/v1/alerts/splunk");
        let response = signed_post(&reqwest::Client::new(), &url, body)
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

/// The sample Splunk webhook body with a distinct model name, so each call is its own
/// incident.
pub fn webhook_alert(model: &str) -> Value {
    let text = std::fs::read_to_string(crate::sample("splunk-webhook.json")).expect("sample");
    let mut body: Value = serde_json::from_str(&text).expect("sample is JSON");
    body["result"]["model_name"] = Value::String(model.to_owned());
    body
}

/// Whether HEC holds the alert, the diagnosis and the final ledger record of `incident`.
pub fn incident_complete(hec: &HecServer, incident: &str) -> bool {
    let events = hec.incident(incident);
    let has = |sourcetype: &str| events.iter().any(|e| e["sourcetype"] == sourcetype);
    // The remediator writes one record per step: complete means its last, terminal one.
    let decided = events.iter().any(|e| {
        e["sourcetype"] == "opsmesh:remediation"
            && e["event"]["payload"]["state"]
                .as_str()
                .and_then(|s| s.parse::<opsmesh_proto::IncidentState>().ok())
                .is_some_and(opsmesh_proto::IncidentState::is_terminal)
    });
    has("opsmesh:alert") && has("opsmesh:diagnosis") && decided
}
