//! One investigation as the read model tracks it, from the request on
//! `opsmesh.investigation-requests.v1` (queued) through the investigator's status updates
//! (running, failed), its steps and its report on `opsmesh.investigations.v1`. The two topics
//! are read by one consumer but not in one order, so every message moves the record forward
//! only: a request read after the report does not make a completed investigation queued again.

use chrono::{DateTime, Utc};
use serde::Serialize;

use opsmesh_proto::{
    Envelope, RootCause,
    investigation::{
        InvestigationEvent, InvestigationReport, InvestigationRequest, InvestigationState,
        InvestigationStep, InvestigationUpdate,
    },
};

/// How far along a message says an investigation is: a message never moves it back.
fn progress(state: InvestigationState, from_report: bool) -> u8 {
    match state {
        InvestigationState::Queued => 0,
        InvestigationState::Running => 1,
        // A report is the last word, even over a failure status read before it.
        _ if from_report => 3,
        InvestigationState::Completed
        | InvestigationState::Failed
        | InvestigationState::OverBudget => 2,
    }
}

/// A row of the investigations list (`GET /api/investigations`).
#[derive(Debug, Clone, Serialize)]
pub struct InvestigationSummary {
    pub investigation_id: String,
    /// The incident investigated; `None` for a question.
    pub incident_id: Option<String>,
    pub state: InvestigationState,
    /// What was asked (the investigator's wording once it runs; absent for an incident
    /// request not taken up yet: why it happened and what to do).
    pub question: Option<String>,
    pub namespace: Option<String>,
    /// `diagnoser`, `cli:<user>`, `console:<user>`, `mcp:<token holder>`.
    pub requested_by: Option<String>,
    /// The investigator's word on the state (why it failed, `attempt 2`, why it stopped).
    pub detail: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Steps taken (the highest step number seen).
    pub steps: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// The report's root cause, once there is one.
    pub root_cause: Option<RootCause>,
}

/// `GET /api/investigations/{id}`: the state, every step kept, and the report.
#[derive(Debug, Clone, Serialize)]
pub struct InvestigationDetail {
    #[serde(flatten)]
    pub summary: InvestigationSummary,
    /// In step order; the report's own once it arrived.
    pub step_list: Vec<InvestigationStep>,
    pub report: Option<InvestigationReport>,
}

pub(super) struct Investigation {
    id: String,
    incident_id: Option<String>,
    state: InvestigationState,
    progress: u8,
    question: Option<String>,
    namespace: Option<String>,
    requested_by: Option<String>,
    detail: Option<String>,
    requested_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    step_count: u32,
    /// At most `max_steps` (one per step number: a redelivered or re-run step replaces it).
    steps: Vec<InvestigationStep>,
    max_steps: usize,
    report: Option<Box<InvestigationReport>>,
    /// The report's envelope, for the incident's timeline.
    pub report_envelope: Option<Seen>,
    /// The request's envelope, for the incident's timeline.
    pub request_envelope: Option<Seen>,
}

/// What the timeline shows of a message: its id, time and source.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub id: uuid::Uuid,
    pub at: DateTime<Utc>,
    pub source: String,
}

impl Seen {
    fn of<P>(envelope: &Envelope<P>) -> Self {
        Self {
            id: envelope.id,
            at: envelope.occurred_at,
            source: envelope.source.clone(),
        }
    }
}

impl Investigation {
    pub fn new(id: &str, incident_id: Option<String>, at: DateTime<Utc>, max_steps: usize) -> Self {
        Self {
            id: id.to_owned(),
            incident_id,
            state: InvestigationState::Queued,
            progress: 0,
            question: None,
            namespace: None,
            requested_by: None,
            detail: None,
            requested_at: None,
            started_at: None,
            finished_at: None,
            updated_at: at,
            step_count: 0,
            steps: Vec::new(),
            max_steps,
            report: None,
            report_envelope: None,
            request_envelope: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the investigator has not finished it.
    pub fn is_open(&self) -> bool {
        self.progress < 2
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = self.updated_at.max(at);
    }

    fn advance(&mut self, state: InvestigationState, from_report: bool) -> bool {
        let progress = progress(state, from_report);
        if progress < self.progress {
            return false;
        }
        self.progress = progress;
        self.state = state;
        true
    }

    /// Applies the request; returns whether anything changed (a redelivery changes nothing).
    pub fn apply_request(&mut self, request: &Envelope<InvestigationRequest>) -> bool {
        if self
            .request_envelope
            .as_ref()
            .is_some_and(|seen| seen.id == request.id)
        {
            return false;
        }
        let r = &request.payload;
        self.request_envelope = Some(Seen::of(request));
        self.requested_at = Some(request.occurred_at);
        self.requested_by = Some(r.requested_by.clone());
        self.question = self.question.take().or_else(|| r.question.clone());
        self.namespace = self.namespace.take().or_else(|| r.namespace.clone());
        self.incident_id = self.incident_id.take().or_else(|| r.incident_id.clone());
        self.advance(InvestigationState::Queued, false);
        self.touch(request.occurred_at);
        true
    }

    /// Applies a status, step or report; returns whether anything changed.
    pub fn apply_event(&mut self, event: &Envelope<InvestigationEvent>) -> bool {
        let e = &event.payload;
        let at = event.occurred_at;
        // The investigator's wording of the question is what the model was asked.
        self.question = Some(e.question.clone());
        if e.namespace.is_some() {
            self.namespace = e.namespace.clone();
        }
        let changed = match &e.update {
            InvestigationUpdate::Status(status) => {
                let moved = self.advance(status.state, false);
                if moved {
                    // The request names who asked; the status repeats it for readers that
                    // missed the request.
                    self.requested_by
                        .get_or_insert_with(|| status.requested_by.clone());
                    self.detail = Some(status.detail.clone()).filter(|d| !d.is_empty());
                    match status.state {
                        InvestigationState::Running => {
                            self.started_at.get_or_insert(at);
                        }
                        _ => self.finished_at = Some(at),
                    }
                }
                moved
            }
            InvestigationUpdate::Step(step) => self.add_step(step.clone(), at),
            InvestigationUpdate::Report(report) => {
                if self
                    .report_envelope
                    .as_ref()
                    .is_some_and(|seen| seen.id == event.id)
                    || !self.advance(report.state, true)
                {
                    return false;
                }
                self.detail = Some(report.stop_detail.clone());
                self.step_count = self.step_count.max(report.steps.len() as u32);
                self.finished_at = Some(at);
                self.started_at.get_or_insert(at);
                self.report = Some(report.clone());
                self.report_envelope = Some(Seen::of(event));
                true
            }
        };
        if changed {
            self.touch(at);
        }
        changed
    }

    fn add_step(&mut self, step: InvestigationStep, at: DateTime<Utc>) -> bool {
        if self.report.is_some() {
            // The report holds every step already.
            return false;
        }
        if self.progress == 0 {
            // A step means the investigator took it up, whether or not its status was read.
            self.advance(InvestigationState::Running, false);
            self.started_at.get_or_insert(at);
        }
        self.step_count = self.step_count.max(step.step);
        match self.steps.binary_search_by_key(&step.step, |s| s.step) {
            Ok(index) if self.steps[index] == step => return false,
            Ok(index) => self.steps[index] = step,
            Err(index) if self.steps.len() < self.max_steps => self.steps.insert(index, step),
            // Beyond the cap a step is counted, not kept (the report carries them all).
            Err(_) => {}
        }
        true
    }

    /// The report and when it arrived.
    pub fn report(&self) -> Option<(&InvestigationReport, DateTime<Utc>)> {
        self.report
            .as_deref()
            .zip(self.report_envelope.as_ref().map(|seen| seen.at))
    }

    pub fn summary(&self) -> InvestigationSummary {
        let (prompt_tokens, completion_tokens, cost_usd) = match &self.report {
            Some(report) => (
                report.usage.prompt_tokens,
                report.usage.completion_tokens,
                report.usage.cost_usd,
            ),
            None => self.steps.iter().fold((0, 0, 0.0), |(p, c, usd), s| {
                (
                    p + s.prompt_tokens,
                    c + s.completion_tokens,
                    usd + s.cost_usd,
                )
            }),
        };
        InvestigationSummary {
            investigation_id: self.id.clone(),
            incident_id: self.incident_id.clone(),
            state: self.state,
            question: self.question.clone(),
            namespace: self.namespace.clone(),
            requested_by: self.requested_by.clone(),
            detail: self.detail.clone(),
            requested_at: self.requested_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            updated_at: self.updated_at,
            steps: self.step_count,
            prompt_tokens,
            completion_tokens,
            cost_usd,
            root_cause: self.report.as_ref().map(|r| r.root_cause),
        }
    }

    pub fn detail(&self) -> InvestigationDetail {
        InvestigationDetail {
            summary: self.summary(),
            step_list: match &self.report {
                Some(report) => report.steps.clone(),
                None => self.steps.clone(),
            },
            report: self.report.as_deref().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use opsmesh_proto::investigation::{InvestigationStatus, StepKind};

    use super::*;

    fn request(id: &str) -> Envelope<InvestigationRequest> {
        Envelope::new(
            "opsmesh-reporter",
            "c",
            None,
            InvestigationRequest {
                investigation_id: id.into(),
                incident_id: None,
                question: Some("why?".into()),
                namespace: None,
                requested_by: "cli:alice".into(),
                facts: None,
            },
        )
    }

    fn event(id: &str, update: InvestigationUpdate) -> Envelope<InvestigationEvent> {
        Envelope::new(
            "opsmesh-diagnoser",
            "c",
            None,
            InvestigationEvent {
                investigation_id: id.into(),
                question: "why?".into(),
                namespace: None,
                update,
            },
        )
    }

    fn status(state: InvestigationState) -> InvestigationUpdate {
        InvestigationUpdate::Status(InvestigationStatus {
            state,
            requested_by: "cli:alice".into(),
            detail: "attempt 2".into(),
        })
    }

    fn step(n: u32, tokens: u64) -> InvestigationUpdate {
        InvestigationUpdate::Step(InvestigationStep {
            step: n,
            kind: StepKind::ModelCall,
            tool: None,
            arguments: None,
            evidence_id: None,
            result_digest: None,
            refused: None,
            prompt_tokens: tokens,
            completion_tokens: 0,
            latency_ms: 1,
            cost_usd: 0.0,
        })
    }

    #[test]
    fn messages_read_out_of_order_never_move_it_back() {
        let mut i = Investigation::new("inv-1", None, Utc::now(), 10);
        let failed = event("inv-1", status(InvestigationState::Failed));
        assert!(i.apply_event(&failed));
        assert!(!i.apply_event(&event("inv-1", status(InvestigationState::Running))));
        let request = request("inv-1");
        assert!(
            i.apply_request(&request),
            "who asked and when is still news"
        );
        assert!(!i.apply_request(&request), "a redelivery is not");
        let summary = i.summary();
        assert_eq!(summary.state, InvestigationState::Failed);
        assert_eq!(summary.requested_by.as_deref(), Some("cli:alice"));
        assert!(summary.requested_at.is_some() && summary.finished_at.is_some());
        assert!(!i.is_open());
    }

    #[test]
    fn steps_are_kept_once_each_up_to_the_cap_and_counted_beyond() {
        let mut i = Investigation::new("inv-1", None, Utc::now(), 2);
        let first = event("inv-1", step(1, 100));
        assert!(i.apply_event(&first));
        assert_eq!(
            i.summary().state,
            InvestigationState::Running,
            "a step means running"
        );
        assert!(!i.apply_event(&first), "a redelivered step changes nothing");
        assert!(i.apply_event(&event("inv-1", step(2, 10))));
        assert!(i.apply_event(&event("inv-1", step(3, 1))));
        let summary = i.summary();
        assert_eq!((summary.steps, summary.prompt_tokens), (3, 110));
        assert_eq!(i.detail().step_list.len(), 2);
    }
}
