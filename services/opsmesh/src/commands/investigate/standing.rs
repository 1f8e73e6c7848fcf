//! Where one investigation stands, folded from its request and its events.

use serde::Serialize;

use opsmesh_proto::investigation::{
    InvestigationEvent, InvestigationReport, InvestigationRequest, InvestigationState,
    InvestigationStep, InvestigationUpdate,
};

/// What is known of one investigation: its request (if still on the topic) and the last of
/// its events. Printed as text, or as JSON with `--json`.
#[derive(Debug, Serialize)]
pub struct Standing {
    pub investigation_id: String,
    pub state: InvestigationState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The last status's detail: why it failed, or `attempt 2` when a restart re-runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Steps of the current attempt before its report (the report lists them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<InvestigationStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<InvestigationReport>,
}

impl Standing {
    /// A request on the queue: `queued` until an event says otherwise.
    pub fn requested(request: &InvestigationRequest) -> Self {
        Self {
            incident_id: request.incident_id.clone(),
            question: request.question.clone(),
            namespace: request.namespace.clone(),
            requested_by: Some(request.requested_by.clone()),
            ..Self::unknown(&request.investigation_id)
        }
    }

    /// Nothing read yet (the request may have left the topic's retention).
    pub fn unknown(investigation_id: &str) -> Self {
        Self {
            investigation_id: investigation_id.to_owned(),
            state: InvestigationState::Queued,
            incident_id: None,
            question: None,
            namespace: None,
            requested_by: None,
            detail: None,
            steps: Vec::new(),
            report: None,
        }
    }

    /// Applies the next event of this investigation (the last one read decides the state).
    pub fn apply(&mut self, event: &InvestigationEvent) {
        self.question.get_or_insert_with(|| event.question.clone());
        if self.namespace.is_none() {
            self.namespace.clone_from(&event.namespace);
        }
        match &event.update {
            InvestigationUpdate::Status(status) => {
                self.state = status.state;
                self.detail = Some(status.detail.clone()).filter(|d| !d.is_empty());
                self.requested_by
                    .get_or_insert_with(|| status.requested_by.clone());
                // A restart runs it again from its first step.
                self.steps.clear();
                self.report = None;
            }
            InvestigationUpdate::Step(step) => {
                self.state = InvestigationState::Running;
                self.steps.push(step.clone());
            }
            InvestigationUpdate::Report(report) => {
                self.state = report.state;
                self.steps.clear();
                self.report = Some((**report).clone());
            }
        }
    }

    /// Completed, failed or over budget: nothing more will happen to it.
    pub fn ended(&self) -> bool {
        !matches!(
            self.state,
            InvestigationState::Queued | InvestigationState::Running
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsmesh_proto::investigation::{InvestigationStatus, StepKind};

    fn event(update: InvestigationUpdate) -> InvestigationEvent {
        InvestigationEvent {
            investigation_id: "inv-1".into(),
            question: "Why?".into(),
            namespace: Some("ml-team-a".into()),
            update,
        }
    }

    fn status(state: InvestigationState, detail: &str) -> InvestigationEvent {
        event(InvestigationUpdate::Status(InvestigationStatus {
            state,
            requested_by: "cli:alice".into(),
            detail: detail.into(),
        }))
    }

    fn step(n: u32) -> InvestigationEvent {
        event(InvestigationUpdate::Step(InvestigationStep {
            step: n,
            kind: StepKind::ModelCall,
            tool: None,
            arguments: None,
            evidence_id: None,
            result_digest: None,
            refused: None,
            prompt_tokens: 10,
            completion_tokens: 2,
            latency_ms: 5,
            cost_usd: 0.0,
        }))
    }

    #[test]
    fn queued_then_running_then_a_rerun_after_a_restart_starts_its_steps_over() {
        let mut s = Standing::unknown("inv-1");
        assert_eq!(s.state, InvestigationState::Queued);
        s.apply(&status(InvestigationState::Running, ""));
        s.apply(&step(1));
        s.apply(&step(2));
        assert_eq!(
            (s.state, s.steps.len(), s.ended()),
            (InvestigationState::Running, 2, false)
        );
        assert_eq!(s.question.as_deref(), Some("Why?"), "taken from the events");
        s.apply(&status(InvestigationState::Running, "attempt 2"));
        assert_eq!(s.detail.as_deref(), Some("attempt 2"));
        assert!(s.steps.is_empty());
        s.apply(&status(
            InvestigationState::Failed,
            "investigator not enabled",
        ));
        assert!(s.ended());
    }
}
