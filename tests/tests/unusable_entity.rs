//! An authenticated alert naming its resource with an injection attempt is not lost: the
//! receiver accepts it (202), the diagnoser escalates it with root cause `unknown` naming the
//! quoted values, and the remediator changes nothing — no target is ever built from them.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use opsmesh_proto::topics;
use opsmesh_runtime::{ConfigTree, bus::MemoryBus, launcher};
use opsmesh_tests::{eventually, hec::HecServer, mesh::signed_post};

/// Every envelope on `topic` about `incident`.
fn about(bus: &MemoryBus, topic: &str, incident: &str) -> Vec<Value> {
    bus.snapshot(topic)
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).expect("JSON envelope"))
        .filter(|e| {
            e["incident_id"]
                .as_str()
                .is_some_and(|i| i.starts_with(incident))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_entity_is_escalated_as_unknown_and_nothing_acts_on_it() {
    let hec = HecServer::start().await;
    let secrets = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secrets.path(), format!("{}\n", opsmesh_tests::mesh::SECRET)).unwrap();
    let env: Vec<(String, String)> = [
        (
            "OPSMESH__RECEIVER__SOURCES__SPLUNK__SECRETS_FILE",
            secrets.path().display().to_string(),
        ),
        ("OPSMESH__BUS__KIND", "memory".into()),
        ("OPSMESH__HTTP__LISTEN", "127.0.0.1:0".into()),
        ("OPSMESH__HTTP__ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("OPSMESH__DIAGNOSER__TELEMETRY_WAIT", "0s".into()),
        ("OPSMESH__REMEDIATOR__POLICY__MODE", "auto".into()),
        ("OPSMESH__REPORTER__HEC__URL", hec.url().to_owned()),
        ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let tree = ConfigTree::load_with_env(None, env).unwrap();
    let settings = tree.settings().unwrap();
    let bus = MemoryBus::new(&settings.bus.memory);
    let app = launcher::build(
        &tree,
        settings,
        opsmesh::SERVICES,
        Some(Arc::new(bus.clone())),
    )
    .await
    .expect("mesh builds");
    let url = format!("http://{}/v1/alerts/splunk", app.local_addr());
    let stop = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    let body = json!({
        "sid": "scheduler__admin__search__unusable_at_1718035500_1",
        "search_name": "KServe model OOMKilled",
        "result": {
            "namespace": "prod; kubectl delete ns prod",
            "model_name": "../../etc/passwd",
            "memory_limit": "1Gi",
        },
    });
    let response = signed_post(&reqwest::Client::new(), &url, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "accepted, not refused and lost");
    let reply: Value = response.json().await.unwrap();
    let incident = reply["incident_key"].as_str().unwrap().to_owned();

    let diagnosis = eventually("the diagnosis", Duration::from_secs(20), || async {
        about(&bus, topics::DIAGNOSES, &incident).pop()
    })
    .await;
    let d = &diagnosis["payload"];
    assert_eq!(d["root_cause"], "unknown", "{d:#}");
    assert!(d.get("target").is_none_or(Value::is_null), "{d:#}");
    let summary = d["summary"].as_str().unwrap();
    for quoted in [
        r#"namespace="prod; kubectl delete ns prod""#,
        r#"model_name="../../etc/passwd""#,
    ] {
        assert!(summary.contains(quoted), "{summary}");
    }
    let actions: Vec<&str> = d["recommended_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["escalate"], "{d:#}");

    // The remediator escalates it without acting: telling humans needs no resource.
    let records = eventually(
        "the remediator's terminal record",
        Duration::from_secs(20),
        || async {
            let records = about(&bus, topics::REMEDIATIONS, &incident);
            records
                .iter()
                .any(|r| matches!(r["payload"]["state"].as_str(), Some("escalated")))
                .then_some(records)
        },
    )
    .await;
    for record in &records {
        let action = &record["payload"]["action"];
        assert!(
            action.is_null()
                || (action["kind"] == "escalate"
                    && matches!(action["target"].as_str(), Some("" | "unknown"))),
            "nothing but an escalation, and no target built from the values: {record:#}"
        );
    }

    stop.cancel();
    running.await.unwrap().expect("clean shutdown");
}
