//! remediator: answers each diagnosis with a decision on `opsmesh.remediations.v1`, every
//! decision a record of the incident's hash-chained audit ledger.
//!
//! This version carries out the actions that change nothing in the cluster (a developer fix, a
//! notification) and hands every cluster-changing action to humans; governed execution
//! (policy, approvals, verification, rollback) builds on this consumer.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    ActionKind, Envelope, IncidentState, RootCause,
    diagnosis::{ActionProposal, Diagnosis},
    ledger::{GENESIS, LedgerLink},
    remediation::{ActionMode, ActionRecord, Remediation},
    topics,
};
use opsmesh_runtime::{
    BoxError, Component, ConfigTree, Context, Handler, HandlerError, Received, ServiceDef,
    StartError,
};

/// One Kubernetes permission: verbs on a resource of an API group (`""` is core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every Kubernetes call the remediator's actions are allowed to make. The Role in
/// `deploy/k8s/base/remediator-rbac.yaml` grants exactly this (a test compares them), and the
/// cluster simulator can enforce it, so the remediator cannot quietly need more.
pub const KUBERNETES_PERMISSIONS: &[Permission] = &[
    Permission {
        api_group: "",
        resource: "limitranges",
        verbs: &["create", "get", "patch"],
    },
    Permission {
        api_group: "",
        resource: "pods",
        verbs: &["get", "list"],
    },
    Permission {
        api_group: "",
        resource: "resourcequotas",
        verbs: &["create", "get", "patch"],
    },
    Permission {
        api_group: "serving.kserve.io",
        resource: "inferenceservices",
        verbs: &["get", "list", "patch"],
    },
];

pub const SERVICE: ServiceDef = ServiceDef {
    name: "remediator",
    section: "remediator",
    about: "Consumes opsmesh.diagnoses.v1 and publishes governed decisions to opsmesh.remediations.v1",
    build,
};

fn build<'a>(
    _tree: &'a ConfigTree,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<Arc<dyn Component>, StartError>> {
    Box::pin(async move { Ok(Arc::new(Remediator { ctx: ctx.clone() }) as Arc<dyn Component>) })
}

pub struct Remediator {
    ctx: Context,
}

impl Component for Remediator {
    fn name(&self) -> &'static str {
        SERVICE.name
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move {
            let handler = Arc::new(DiagnosisHandler {
                ctx: self.ctx.clone(),
            });
            self.ctx
                .consume(SERVICE.name, &[topics::DIAGNOSES], handler, shutdown)
                .await?;
            Ok(())
        })
    }
}

struct DiagnosisHandler {
    ctx: Context,
}

#[async_trait]
impl Handler for DiagnosisHandler {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let diagnosis = Envelope::<Diagnosis>::from_slice(&message.payload)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let incident = diagnosis.incident_id.clone().unwrap_or_default();
        let decision = decide(&incident, diagnosis.id, &diagnosis.payload).seal(0, GENESIS);
        let envelope = Envelope::derive(&diagnosis, "opsmesh-remediator", "decision", decision);
        self.ctx
            .publisher
            .publish(&incident, &envelope)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        tracing::info!(incident = %incident, state = %envelope.payload.state, "decision published");
        Ok(())
    }
}

/// Decides what to do with a diagnosis. Actions that change nothing in the cluster (telling a
/// developer the fix, telling humans) are carried out here; actions that would change the
/// cluster are not executed by this version and go to humans instead.
fn decide(incident: &str, diagnosis_id: uuid::Uuid, d: &Diagnosis) -> Remediation {
    let record =
        |state: IncidentState, action: Option<&ActionProposal>, reason: String| Remediation {
            diagnosis_id,
            state,
            action: action.map(|a| ActionRecord {
                kind: a.kind,
                target: a.target.clone(),
                params: a.params.clone(),
                idempotency_key: format!("{incident}:{}:{}", a.kind, a.target),
                mode: ActionMode::Auto,
            }),
            reason,
            projected_effect: None,
            projected_saving_usd: None,
            verification: None,
            ledger: LedgerLink {
                seq: 0,
                prev_hash: GENESIS.into(),
                hash: String::new(),
            },
        };
    if d.root_cause == RootCause::None {
        return record(
            IncidentState::NoAction,
            None,
            format!("nothing to do: {}", d.summary),
        );
    }
    let Some(first) = d.recommended_actions.first() else {
        return record(
            IncidentState::Escalated,
            None,
            format!(
                "no action recommended for {}; humans notified",
                d.root_cause
            ),
        );
    };
    let Some(runbook) = &d.runbook else {
        return record(
            IncidentState::Refused,
            Some(first),
            "no runbook section backs the recommended action".into(),
        );
    };
    let cited = format!(
        "runbook {} v{} section {:?}",
        runbook.id, runbook.version, runbook.section
    );
    match first.kind {
        ActionKind::SuggestPolicyFix => record(
            IncidentState::Advised,
            Some(first),
            format!("the fix is for the developer ({cited}); nothing changed in the cluster"),
        ),
        ActionKind::Escalate => record(
            IncidentState::Escalated,
            Some(first),
            format!("humans notified ({cited})"),
        ),
        kind => record(
            IncidentState::Escalated,
            None,
            format!(
                "{kind} on {} is allowed by {cited}, but executing cluster changes is not enabled in this version; humans notified",
                first.target
            ),
        ),
    }
}
