//! Typed incidents for the timeline, console, MCP and notification tests: an alert, its
//! diagnosis (from the golden examples) and a remediator that asks for approval and acts on
//! the answer.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState, Payload,
    alert::Alert,
    approval::{Approval, ApprovalDecision, signed_bytes},
    diagnosis::Diagnosis,
    ledger::GENESIS,
    remediation::{ActionMode, ActionRecord, Remediation, Verification},
    topics,
};
use opsmesh_runtime::{
    Bus,
    bus::{MemoryBus, Outgoing},
    signing::KeyRing,
};

/// One incident's messages.
pub struct Incident {
    pub id: String,
    pub alert: Envelope<Alert>,
    pub diagnosis: Envelope<Diagnosis>,
}

impl Incident {
    /// A fresh OOM incident (golden examples with new ids) in `namespace`.
    pub fn oom(namespace: &str) -> Self {
        let id = format!("inc-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut alert: Envelope<Alert> = serde_json::from_str(include_str!(
            "../../../../proto/examples/opsmesh.alerts.v1.json"
        ))
        .unwrap();
        alert.id = Uuid::now_v7();
        alert.incident_id = Some(id.clone());
        alert.occurred_at = Utc::now();
        alert.payload.received_at = Utc::now();
        alert.payload.fingerprint = id.clone();
        alert.payload.entity.namespace = Some(namespace.to_owned());
        let mut diagnosis: Envelope<Diagnosis> = serde_json::from_str(include_str!(
            "../../../../proto/examples/opsmesh.diagnoses.v1.json"
        ))
        .unwrap();
        diagnosis.id = Uuid::now_v7();
        diagnosis.incident_id = Some(id.clone());
        diagnosis.occurred_at = Utc::now();
        diagnosis.payload.alert_ids = vec![alert.id];
        diagnosis.payload.fingerprint = id.clone();
        let target = format!("inferenceservice/{namespace}/gpt-oss-120b");
        diagnosis.payload.target = Some(target.clone());
        for action in &mut diagnosis.payload.recommended_actions {
            action.target = target.clone();
        }
        Self {
            id,
            alert,
            diagnosis,
        }
    }

    pub fn target(&self) -> String {
        self.diagnosis.payload.target.clone().unwrap()
    }

    pub fn idempotency_key(&self) -> String {
        format!("{}:patch_memory_limit:{}", self.id, self.target())
    }

    /// Record `seq` of this incident's ledger after `prev`.
    pub fn record(
        &self,
        seq: u64,
        prev: Option<&Envelope<Remediation>>,
        state: IncidentState,
        verification: Option<Verification>,
        reason: &str,
    ) -> Envelope<Remediation> {
        let record = Remediation {
            diagnosis_id: self.diagnosis.id,
            state,
            // Built from JSON so fields added to the contract later keep their defaults.
            action: Some(
                serde_json::from_value::<ActionRecord>(serde_json::json!({
                    "kind": ActionKind::PatchMemoryLimit,
                    "target": self.target(),
                    "params": {"memory_limit": "640Mi"},
                    "idempotency_key": self.idempotency_key(),
                    "mode": ActionMode::Approve,
                }))
                .unwrap(),
            ),
            reason: reason.to_owned(),
            projected_effect: Some("memory limit 256Mi -> 640Mi".into()),
            projected_saving_usd: None,
            verification,
            ledger: opsmesh_proto::ledger::LedgerLink::default(),
        };
        let mut envelope = Envelope::derive(
            &self.diagnosis,
            "opsmesh-remediator",
            &format!("r{seq}"),
            record,
        );
        envelope.occurred_at = Utc::now();
        envelope.seal(
            seq,
            prev.map_or(GENESIS, |p| p.payload.ledger.hash.as_str()),
        );
        envelope
    }

    pub fn awaiting(&self) -> Envelope<Remediation> {
        self.record(
            0,
            None,
            IncidentState::AwaitingApproval,
            None,
            "allowed by runbook oom-killed section 'Raise the memory limit'; policy mode approve",
        )
    }
}

pub async fn publish<P: Payload>(bus: &MemoryBus, envelope: &Envelope<P>) {
    bus.publish(Outgoing {
        topic: P::SCHEMA.into(),
        key: envelope.incident_id.clone().unwrap_or_default(),
        payload: envelope.to_vec(),
        headers: vec![
            ("content-type".into(), b"application/json".into()),
            ("opsmesh-schema".into(), P::SCHEMA.as_bytes().into()),
        ],
    })
    .await
    .unwrap();
}

/// Publishes the alert, the diagnosis and the request for approval.
pub async fn publish_awaiting(bus: &MemoryBus, incident: &Incident) -> Envelope<Remediation> {
    publish(bus, &incident.alert).await;
    publish(bus, &incident.diagnosis).await;
    let awaiting = incident.awaiting();
    publish(bus, &awaiting).await;
    awaiting
}

/// Stands in for the remediator: on an approval of `incident`'s pending action it records
/// `executing`, then `resolved` with a healthy verification; on a rejection, `refused`.
/// Returns the approvals it saw.
pub fn fake_remediator(
    bus: MemoryBus,
    incident: Arc<Incident>,
    first: Envelope<Remediation>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<Envelope<Approval>>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut subscription = bus
            .subscribe("fake-remediator", &[topics::APPROVALS])
            .await
            .unwrap();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return seen,
                m = subscription.recv() => m.unwrap(),
            };
            let approval = Envelope::<Approval>::from_slice(&message.payload).unwrap();
            subscription.store(&message).unwrap();
            if approval.payload.idempotency_key != incident.idempotency_key() {
                continue;
            }
            // As the remediator: only approvals signed by the reporter's key count.
            let trusted = KeyRing::from_pem(&super::approval_key().public_pem()).unwrap();
            if trusted
                .verify(
                    &signed_bytes(&approval),
                    approval.payload.signature.as_ref(),
                )
                .is_err()
            {
                continue;
            }
            seen.push(approval.clone());
            match approval.payload.decision {
                ApprovalDecision::Approve => {
                    let executing = incident.record(
                        1,
                        Some(&first),
                        IncidentState::Executing,
                        None,
                        &format!("approved by {}", approval.payload.approver),
                    );
                    publish(&bus, &executing).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let resolved = incident.record(
                        2,
                        Some(&executing),
                        IncidentState::Resolved,
                        Some(Verification {
                            attempts: 2,
                            healthy: true,
                            detail: "2/2 replicas ready, no restarts for 60s".into(),
                        }),
                        "memory limit raised to 640Mi; model healthy",
                    );
                    publish(&bus, &resolved).await;
                }
                ApprovalDecision::Reject => {
                    let refused = incident.record(
                        1,
                        Some(&first),
                        IncidentState::Refused,
                        None,
                        &format!("rejected by {}", approval.payload.approver),
                    );
                    publish(&bus, &refused).await;
                }
            }
        }
    })
}

/// Every approval on the bus so far.
pub async fn approvals(bus: &MemoryBus) -> Vec<Envelope<Approval>> {
    super::published(bus).await
}
