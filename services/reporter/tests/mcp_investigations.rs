//! The MCP investigation tools through rmcp's own client over streamable HTTP: `investigate`
//! queues a question or an incident (approver tokens only) and answers with the id, queued;
//! `get_investigation` follows it to the report; bad arguments are tool errors naming the
//! field, and publish nothing.

mod support;

use std::time::Duration;

use serde_json::json;

use opsmesh_proto::investigation::{InvestigationState, InvestigationUpdate};
use support::{
    HecServer, RunningReporter,
    console::write_lines,
    eventually,
    incident::{Incident, publish},
    investigation::{event, report, requests, status, steps},
    mcp::{call, json_of, mcp_client, text},
    memory_bus,
};

const ASSISTANT: &str = "assistant-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn investigate_and_get_investigation_round_trip_and_only_approvers_queue() {
    let (hec, bus, dir) = (
        HecServer::start().await,
        memory_bus(),
        tempfile::tempdir().unwrap(),
    );
    let tokens = write_lines(
        dir.path(),
        "mcp-tokens",
        &[
            format!("assistant:{ASSISTANT}:approver"),
            format!("reader:{READER}"),
        ],
    );
    let tokens = tokens.display().to_string();
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN),
            ("OPSMESH__REPORTER__MCP__ENABLED", "true"),
            ("OPSMESH__REPORTER__MCP__TOKENS_FILE", tokens.as_str()),
        ],
    )
    .await;
    let url = format!("http://{}/mcp", reporter.addr);
    let incident = Incident::oom("ml-team-a");
    publish(&bus, &incident.alert).await;
    publish(&bus, &incident.diagnosis).await;
    let assistant = mcp_client(&url, ASSISTANT).await;

    // Bad arguments: a tool error naming the field, nothing published.
    for (arguments, field) in [
        (json!({}), "question:"),
        (json!({"question": "  "}), "question:"),
        (json!({"question": "x".repeat(2001)}), "question:"),
        (
            json!({"question": "why?", "namespace": "Not_NS"}),
            "namespace:",
        ),
        (json!({"incident_id": "inc-unknown"}), "incident_id:"),
        (
            json!({"incident_id": incident.id, "question": "why?"}),
            "incident_id:",
        ),
    ] {
        let refused = call(&assistant, "investigate", arguments.clone()).await;
        assert_eq!(
            refused.is_error,
            Some(true),
            "{arguments}: {}",
            text(&refused)
        );
        assert!(
            text(&refused).contains(field),
            "{arguments}: {}",
            text(&refused)
        );
    }
    let unknown = call(
        &assistant,
        "get_investigation",
        json!({"investigation_id": "inv-nope"}),
    )
    .await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text(&unknown).contains("investigation_id:"),
        "{}",
        text(&unknown)
    );

    // A viewer's token reads but does not queue.
    let reader = mcp_client(&url, READER).await;
    let refused = call(&reader, "investigate", json!({"question": "why?"})).await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text(&refused).contains("needs the approver role"),
        "{}",
        text(&refused)
    );
    assert!(requests(&bus).await.is_empty(), "nothing published");

    // A question: queued, then the investigator's messages take it to the report.
    let queued = json_of(
        &call(
            &assistant,
            "investigate",
            json!({"question": "Why does ml-team-a restart?", "namespace": "ml-team-a"}),
        )
        .await,
    );
    assert_eq!(queued["state"], "queued");
    let id = queued["investigation_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("inv-"), "{id}");
    let read = json_of(
        &call(
            &reader,
            "get_investigation",
            json!({"investigation_id": id}),
        )
        .await,
    );
    assert_eq!(read["state"], "queued");
    assert_eq!(read["requested_by"], "mcp:assistant");
    publish(
        &bus,
        &status(&id, None, InvestigationState::Running, "mcp:assistant", ""),
    )
    .await;
    publish(
        &bus,
        &event(&id, None, InvestigationUpdate::Step(steps()[1].clone())),
    )
    .await;
    let running = eventually("running with its step", Duration::from_secs(10), || async {
        let read = json_of(
            &call(
                &reader,
                "get_investigation",
                json!({"investigation_id": id}),
            )
            .await,
        );
        (read["state"] == "running" && read["step_list"].as_array().is_some_and(|s| s.len() == 1))
            .then_some(read)
    })
    .await;
    assert_eq!(running["step_list"][0]["tool"], "splunk_search");
    publish(
        &bus,
        &event(
            &id,
            None,
            InvestigationUpdate::Report(Box::new(report(&incident.target()))),
        ),
    )
    .await;
    let done = eventually("the report", Duration::from_secs(10), || async {
        let read = json_of(
            &call(
                &assistant,
                "get_investigation",
                json!({"investigation_id": id}),
            )
            .await,
        );
        (read["state"] == "completed").then_some(read)
    })
    .await;
    assert_eq!(done["report"]["findings"][0]["evidence_ids"], json!(["t1"]));
    assert_eq!(done["report"]["evidence"][0]["result"], "count=7");
    assert_eq!(done["step_list"].as_array().unwrap().len(), 3);
    assert_eq!(done["cost_usd"], 0.0042);

    // An incident: the request names it and carries its facts.
    let queued = json_of(
        &call(
            &assistant,
            "investigate",
            json!({"incident_id": incident.id}),
        )
        .await,
    );
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["incident_id"], json!(incident.id));
    let published = requests(&bus).await;
    assert_eq!(published.len(), 2);
    let request = published
        .iter()
        .find(|r| r.payload.investigation_id == queued["investigation_id"].as_str().unwrap())
        .unwrap();
    request.payload.validate().unwrap();
    assert_eq!(request.payload.requested_by, "mcp:assistant");
    assert_eq!(request.incident_id.as_deref(), Some(incident.id.as_str()));
    assert_eq!(
        request.payload.facts.as_ref().unwrap()["root_cause"],
        json!(incident.diagnosis.payload.root_cause)
    );
    reader.cancel().await.unwrap();
    assistant.cancel().await.unwrap();
    reporter.stop().await.unwrap();
}
