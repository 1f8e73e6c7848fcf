//! An authenticated alert naming its resource with an injection attempt is not lost: the
//! receiver accepts it (202), the diagnoser escalates it with root cause `unknown` naming the
//! quoted values, and the remediator changes nothing — no target is ever built from them.

use std::time::Duration;

use serde_json::{Value, json};

use opsmesh_proto::topics;
use opsmesh_runtime::bus::MemoryBus;
use opsmesh_tests::{eventually, hec::HecServer, in_process::InProcessMesh, mesh::signed_post};

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
    let mesh = InProcessMesh::start(
        &hec,
        &[
            ("OPSMESH__DIAGNOSER__TELEMETRY_WAIT", "0s"),
            ("OPSMESH__REMEDIATOR__POLICY__MODE", "auto"),
        ],
    )
    .await;
    let bus = &mesh.bus;
    let url = format!("http://{}/v1/alerts/splunk", mesh.addr);

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
        about(bus, topics::DIAGNOSES, &incident).pop()
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
            let records = about(bus, topics::REMEDIATIONS, &incident);
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

    mesh.stop().await;
}
