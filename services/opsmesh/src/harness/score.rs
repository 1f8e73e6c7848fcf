//! Scoring played scenarios with the metrics of AIOpsLab and ITBench: each scenario over its
//! runs, then all of them together. The README's "Evaluation" section defines every metric;
//! a metric that does not apply to a scenario (localisation of a healthy control) is absent,
//! not counted as a success.

use std::time::Duration;

use serde::Serialize;

use opsmesh_proto::{IncidentState, RootCause};
use opsmesh_sim::{Scenario, scenario::Outcome};

use super::{InvestigationFigures, Verdict, judge::is_mutating};

/// Successes out of the runs (or incidents) a metric applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Ratio {
    pub hits: u32,
    pub of: u32,
}

impl Ratio {
    fn add(&mut self, hit: Option<bool>) {
        if let Some(hit) = hit {
            self.of += 1;
            self.hits += u32::from(hit);
        }
    }

    fn merge(&mut self, other: Ratio) {
        self.hits += other.hits;
        self.of += other.of;
    }

    /// The share of hits (none when the metric applied nowhere).
    pub fn rate(self) -> Option<f64> {
        (self.of > 0).then(|| f64::from(self.hits) / f64::from(self.of))
    }
}

/// A mean of virtual durations, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Mean {
    pub seconds: Option<f64>,
    #[serde(skip)]
    total: f64,
    #[serde(skip)]
    count: u32,
}

impl Mean {
    pub(super) fn add(&mut self, d: Option<Duration>) {
        if let Some(d) = d {
            self.total += d.as_secs_f64();
            self.count += 1;
            self.seconds = Some(self.total / f64::from(self.count));
        }
    }

    pub(super) fn merge(&mut self, other: Mean) {
        self.total += other.total;
        self.count += other.count;
        self.seconds = (self.count > 0).then(|| self.total / f64::from(self.count));
    }
}

/// The metrics over some runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    pub runs: u32,
    pub passed: Ratio,
    pub detection: Ratio,
    pub localisation: Ratio,
    pub root_cause: Ratio,
    pub mitigation: Ratio,
    /// Runs with a cluster write out of the runs that expected no mutating action.
    pub false_remediation: Ratio,
    /// Escalated incidents out of all incidents.
    pub escalation: Ratio,
    pub time_to_diagnosis: Mean,
    pub time_to_mitigation: Mean,
    /// Executed actions (`escalate` included), all runs together.
    pub actions: u64,
    pub llm_tokens: u64,
    pub llm_cost_usd: f64,
    /// The investigator's investigations (absent: it was off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub investigations: Option<InvestigationFigures>,
}

impl Metrics {
    fn merge(&mut self, other: &Metrics) {
        self.runs += other.runs;
        self.passed.merge(other.passed);
        self.detection.merge(other.detection);
        self.localisation.merge(other.localisation);
        self.root_cause.merge(other.root_cause);
        self.mitigation.merge(other.mitigation);
        self.false_remediation.merge(other.false_remediation);
        self.escalation.merge(other.escalation);
        self.time_to_diagnosis.merge(other.time_to_diagnosis);
        self.time_to_mitigation.merge(other.time_to_mitigation);
        self.actions += other.actions;
        self.llm_tokens += other.llm_tokens;
        self.llm_cost_usd += other.llm_cost_usd;
        if let Some(theirs) = &other.investigations {
            self.investigations.get_or_insert_default().merge(theirs);
        }
    }
}

/// One scenario over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioScore {
    pub scenario: String,
    pub file: String,
    pub metrics: Metrics,
    /// Every run gave the same verdict (the same checks passed, outcome and actions).
    pub stable: bool,
    /// What failed, run by run (empty: every run passed).
    pub misses: Vec<String>,
}

/// Every scenario and all of them together.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub runs_per_scenario: u32,
    pub scenarios: Vec<ScenarioScore>,
    pub aggregate: Metrics,
}

impl Report {
    pub fn new(runs_per_scenario: u32, scenarios: Vec<ScenarioScore>) -> Self {
        let mut aggregate = Metrics::default();
        for s in &scenarios {
            aggregate.merge(&s.metrics);
        }
        Self {
            runs_per_scenario,
            scenarios,
            aggregate,
        }
    }

    /// Every run of every scenario passed, and gave the same verdict each time.
    pub fn clean(&self) -> bool {
        self.scenarios
            .iter()
            .all(|s| s.stable && s.misses.is_empty())
    }
}

/// What must be the same on every run of a scenario: whether it passed and which checks
/// did, the outcome and the actions.
#[derive(PartialEq)]
struct Signature<'a> {
    passed: bool,
    checks: Vec<(&'a str, bool)>,
    outcome: Option<&'a str>,
    actions: Vec<String>,
}

fn signature(v: &Verdict) -> Signature<'_> {
    Signature {
        passed: v.passed,
        checks: v
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.passed))
            .collect(),
        outcome: v.outcome.as_deref(),
        actions: v
            .actions
            .iter()
            .map(|a| format!("{} {}", a.kind, a.target))
            .collect(),
    }
}

/// Scores `scenario` (`None`: the file did not load) from the verdicts of its runs.
pub fn score(scenario: Option<&Scenario>, file: &str, runs: &[Verdict]) -> ScenarioScore {
    let mut metrics = Metrics::default();
    let mut misses = Vec::new();
    for (n, verdict) in runs.iter().enumerate() {
        metrics.runs += 1;
        metrics.passed.add(Some(verdict.passed));
        if !verdict.passed {
            misses.push(format!("run {}: {}", n + 1, verdict.failure()));
        }
        if let Some(scenario) = scenario {
            add_run(&mut metrics, scenario, verdict);
        }
    }
    let stable = runs
        .windows(2)
        .all(|w| signature(&w[0]) == signature(&w[1]));
    ScenarioScore {
        scenario: runs
            .first()
            .map_or_else(|| file.to_owned(), |v| v.scenario.clone()),
        file: file.to_owned(),
        metrics,
        stable,
        misses,
    }
}

fn add_run(m: &mut Metrics, scenario: &Scenario, v: &Verdict) {
    let expect = &scenario.expect;
    let incidents = &v.per_incident;
    let detected = incidents
        .iter()
        .any(|i| i.root_cause.is_some_and(|rc| rc != RootCause::None));
    let anomaly = expect.root_cause.map(|rc| rc != RootCause::None);
    m.detection
        .add(anomaly.map(|expected| expected == detected));
    let truth = locations(scenario);
    m.localisation
        .add((anomaly == Some(true) && !truth.is_empty()).then(|| {
            !incidents.is_empty()
                && incidents
                    .iter()
                    .all(|i| i.target.as_ref().is_some_and(|t| truth.contains(t)))
        }));
    m.root_cause.add(expect.root_cause.map(|expected| {
        !incidents.is_empty() && incidents.iter().all(|i| i.root_cause == Some(expected))
    }));
    let resolved = Outcome::State(IncidentState::Resolved);
    let expects_resolution = expect
        .outcome
        .as_ref()
        .is_some_and(|o| o.outcomes().contains(&resolved));
    m.mitigation.add(expects_resolution.then(|| {
        let check = |name: &str| v.checks.iter().all(|c| c.name != name || c.passed);
        check("outcome") && check("within")
    }));
    let expects_no_change = expect
        .actions
        .as_ref()
        .is_some_and(|a| !a.iter().any(|e| is_mutating(e.kind)));
    m.false_remediation
        .add(expects_no_change.then_some(!v.cluster_writes.is_empty()));
    let escalated = IncidentState::Escalated.to_string();
    for i in incidents {
        m.escalation
            .add(Some(i.outcome.as_deref() == Some(escalated.as_str())));
        m.time_to_diagnosis.add(i.time_to_diagnosis);
        if i.outcome.as_deref() == Some(resolved.to_string().as_str()) {
            m.time_to_mitigation.add(i.time_to_outcome);
        }
    }
    m.actions += v.actions.len() as u64;
    m.llm_tokens += v.llm_tokens;
    m.llm_cost_usd += v.llm_cost_usd;
    if let Some(investigations) = &v.investigations {
        let figures = m.investigations.get_or_insert_default();
        for i in investigations {
            figures.add(i);
        }
    }
}

/// Where the fault is: the faults' targets and the targets of the expected actions.
fn locations(scenario: &Scenario) -> Vec<String> {
    let mut out: Vec<String> = scenario
        .resolved_faults()
        .into_iter()
        .filter_map(|(_, _, target)| target.map(|t| t.to_string()))
        .collect();
    for a in scenario.expect.actions.iter().flatten() {
        if let Some(t) = &a.target {
            out.push(t.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}
