//! The investigator's messages, as the diagnoser publishes them: status updates, steps and a
//! report citing a Splunk search; and the requests on the queue.

use std::collections::BTreeMap;

use opsmesh_proto::{
    ActionKind, Envelope, RootCause, Severity,
    diagnosis::{ActionProposal, LlmUsage},
    investigation::{
        Finding, InvestigationEvent, InvestigationReport, InvestigationRequest, InvestigationState,
        InvestigationStatus, InvestigationStep, InvestigationUpdate, StepKind, StopReason,
        ToolEvidence,
    },
};
use opsmesh_runtime::bus::MemoryBus;
use serde_json::json;

pub const SPL: &str =
    "index=opsmesh sourcetype=\"opsmesh:models\" | where oom_killed > 0 | stats count";
pub const DIGEST: &str = "5c1b0f6f5d3a3e8f0b7a9d2c4e6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f";

/// Step `step`: a model call, or a call of `tool` whose result is `evidence_id`.
pub fn step(step: u32, tool: Option<&str>, evidence_id: Option<&str>) -> InvestigationStep {
    InvestigationStep {
        step,
        kind: if tool.is_some() {
            StepKind::ToolCall
        } else {
            StepKind::ModelCall
        },
        tool: tool.map(str::to_owned),
        arguments: tool.map(|_| json!({ "spl": SPL })),
        evidence_id: evidence_id.map(str::to_owned),
        result_digest: evidence_id.map(|_| DIGEST.to_owned()),
        refused: None,
        prompt_tokens: if tool.is_some() { 0 } else { 900 },
        completion_tokens: if tool.is_some() { 0 } else { 120 },
        latency_ms: 40,
        cost_usd: if tool.is_some() { 0.0 } else { 0.0021 },
    }
}

/// The three steps of the report: model call, the cited search, model call.
pub fn steps() -> Vec<InvestigationStep> {
    vec![
        step(1, None, None),
        step(2, Some("splunk_search"), Some("t1")),
        step(3, None, None),
    ]
}

/// A completed report on `target`: one finding citing the search `t1`, one proposal.
pub fn report(target: &str) -> InvestigationReport {
    InvestigationReport {
        state: InvestigationState::Completed,
        stop_reason: StopReason::Answered,
        stop_detail: "the model answered after 3 steps".into(),
        summary: Some("The predictor runs out of memory.".into()),
        findings: vec![Finding {
            claim: "The predictor was OOMKilled 7 times in the last hour.".into(),
            evidence_ids: vec!["t1".into()],
        }],
        root_cause: RootCause::OomKilled,
        risk: Some(Severity::High),
        proposed_actions: vec![ActionProposal {
            kind: ActionKind::PatchMemoryLimit,
            target: target.to_owned(),
            params: BTreeMap::from([("memory_limit".into(), json!("512Mi"))]),
            evidence_ids: vec!["t1".into()],
            rationale: "peaks at 480Mi under a 256Mi limit".into(),
        }],
        evidence: vec![ToolEvidence {
            id: "t1".into(),
            tool: "splunk_search".into(),
            arguments: json!({ "spl": SPL, "earliest": "-1h" }),
            result: "count=7".into(),
        }],
        steps: steps(),
        usage: LlmUsage {
            used: true,
            model: Some("gpt-4o-mini".into()),
            prompt_tokens: 1800,
            completion_tokens: 240,
            cost_usd: 0.0042,
            discarded: Vec::new(),
        },
        discarded_by_reason: BTreeMap::from([("unknown_evidence".into(), 1)]),
    }
}

/// One message of investigation `id` (of `incident`, if any), as the investigator sends it.
pub fn event(
    id: &str,
    incident: Option<&str>,
    update: InvestigationUpdate,
) -> Envelope<InvestigationEvent> {
    Envelope::new(
        "opsmesh-diagnoser",
        "prod-eu-1",
        incident.map(str::to_owned),
        InvestigationEvent {
            investigation_id: id.to_owned(),
            question: "why is the predictor failing?".into(),
            namespace: Some("ml-team-a".into()),
            update,
        },
    )
}

/// The investigator took it up (`running`) or could not (`failed`).
pub fn status(
    id: &str,
    incident: Option<&str>,
    state: InvestigationState,
    requested_by: &str,
    detail: &str,
) -> Envelope<InvestigationEvent> {
    event(
        id,
        incident,
        InvestigationUpdate::Status(InvestigationStatus {
            state,
            requested_by: requested_by.to_owned(),
            detail: detail.to_owned(),
        }),
    )
}

/// Running, the cited search's step, then the report on `target`.
pub fn run_to_report(
    id: &str,
    incident: Option<&str>,
    target: &str,
) -> Vec<Envelope<InvestigationEvent>> {
    vec![
        status(
            id,
            incident,
            InvestigationState::Running,
            "console:someone",
            "",
        ),
        event(id, incident, InvestigationUpdate::Step(steps()[1].clone())),
        event(
            id,
            incident,
            InvestigationUpdate::Report(Box::new(report(target))),
        ),
    ]
}

/// Every request on `opsmesh.investigation-requests.v1` so far.
pub async fn requests(bus: &MemoryBus) -> Vec<Envelope<InvestigationRequest>> {
    super::published(bus).await
}

/// Stands in for the diagnoser's investigator: answers every request on the queue with
/// running, the cited search's step and a completed report on `target`, under the request's
/// id (and incident). Returns the requests it saw.
pub fn fake_investigator(
    bus: MemoryBus,
    target: String,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<Envelope<InvestigationRequest>>> {
    use opsmesh_runtime::Bus;
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut subscription = bus
            .subscribe(
                "fake-investigator",
                &[opsmesh_proto::topics::INVESTIGATION_REQUESTS],
            )
            .await
            .unwrap();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return seen,
                m = subscription.recv() => m.unwrap(),
            };
            let request = Envelope::<InvestigationRequest>::from_slice(&message.payload).unwrap();
            subscription.store(&message).unwrap();
            let id = &request.payload.investigation_id;
            for answer in run_to_report(id, request.incident_id.as_deref(), &target) {
                super::incident::publish(&bus, &answer).await;
            }
            seen.push(request);
        }
    })
}
