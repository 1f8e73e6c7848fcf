//! remediator: answers each diagnosis with a decision on `opsmesh.remediations.v1`, every
//! decision a record of the incident's hash-chained audit ledger.
//!
//! This first version decides and records but does not act: every incident is escalated to
//! humans with the diagnosis' recommendation. Governed actions build on this consumer.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    Envelope, IncidentState,
    diagnosis::Diagnosis,
    ledger::{GENESIS, LedgerLink},
    remediation::Remediation,
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
        let decision = Remediation {
            diagnosis_id: diagnosis.id,
            state: IncidentState::Escalated,
            action: None,
            reason: format!(
                "no automatic action: root cause {} ({}); handed to humans",
                diagnosis.payload.root_cause, diagnosis.payload.summary
            ),
            projected_effect: None,
            projected_saving_usd: None,
            verification: None,
            ledger: LedgerLink {
                seq: 0,
                prev_hash: GENESIS.into(),
                hash: String::new(),
            },
        }
        .seal(0, GENESIS);
        let envelope = Envelope::derive(&diagnosis, "opsmesh-remediator", "decision", decision);
        let key = envelope.incident_id.clone().unwrap_or_default();
        self.ctx
            .publisher
            .publish(&key, &envelope)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        tracing::info!(incident = %key, state = %envelope.payload.state, "decision published");
        Ok(())
    }
}
