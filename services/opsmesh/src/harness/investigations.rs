//! The investigator in a scenario run: turning it on against the simulated cluster, what the
//! harness sees of each investigation (queued on `opsmesh.investigation-requests.v1`, then
//! running, steps and the report on `opsmesh.investigations.v1`), waiting at the end for the
//! investigations a scenario queued, and the figures per run and over runs.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;

use opsmesh_proto::{
    RootCause,
    investigation::{
        InvestigationEvent, InvestigationReport, InvestigationRequest, InvestigationState,
        InvestigationUpdate, StepKind, StopReason,
    },
};
use opsmesh_runtime::{ConfigTree, bus::MemoryBus};

use super::{observe::Observed, score::Mean};

/// `opsmesh eval --investigator`: the investigator on, on the simulated cluster; each setting
/// given here wins over the configuration file and the environment (unset: theirs).
#[derive(Debug, Clone, Default)]
pub struct InvestigatorRun {
    /// `[diagnoser.llm] base_url`.
    pub llm_url: Option<String>,
    /// `[diagnoser.llm] model`.
    pub llm_model: Option<String>,
    /// The environment variable holding the API key (`[diagnoser.llm] api_key_env`). Unset,
    /// and no key configured: none is sent, as local servers (Ollama, vLLM) expect.
    pub llm_api_key_env: Option<String>,
    /// `[diagnoser.investigator] below_confidence` (1.0: every incident is investigated).
    pub below_confidence: Option<f64>,
}

/// What the harness's configuration says about the investigator, whether or not it is on:
/// the simulator's kubeconfig and OpenCost, and the namespaces the scenario's cluster declares.
pub(super) fn defaults(kubeconfig: &str, opencost_url: &str, namespaces: &[String]) -> String {
    format!(
        "[diagnoser.investigator]\nkubeconfig = {kubeconfig}\nopencost_url = {opencost_url:?}\n\
         namespaces = {namespaces:?}\n"
    )
}

impl InvestigatorRun {
    /// The settings that turn the investigator on as asked, as `OPSMESH__…` pairs (the
    /// highest layer); `dir` holds the empty key file for a keyless endpoint.
    pub(super) fn overrides(
        &self,
        probe: &ConfigTree,
        dir: &Path,
    ) -> Result<Vec<(String, String)>, String> {
        let key = |path: &str| format!("OPSMESH__{}", path.to_uppercase().replace('.', "__"));
        let mut pairs = vec![(key("diagnoser.investigator.enabled"), "true".to_owned())];
        if let Some(below) = self.below_confidence {
            pairs.push((
                key("diagnoser.investigator.below_confidence"),
                below.to_string(),
            ));
        }
        if let Some(url) = &self.llm_url {
            pairs.push((key("diagnoser.llm.base_url"), url.clone()));
        }
        if let Some(model) = &self.llm_model {
            pairs.push((key("diagnoser.llm.model"), model.clone()));
        }
        let key_file_set = probe.contains("diagnoser.llm.api_key_file");
        match &self.llm_api_key_env {
            Some(_) if key_file_set => {
                return Err("--llm-api-key-env: the configuration sets \
                            diagnoser.llm.api_key_file, which would be used instead; drop one"
                    .into());
            }
            Some(var) => pairs.push((key("diagnoser.llm.api_key_env"), var.clone())),
            None if !key_file_set && !probe.contains("diagnoser.llm.api_key_env") => {
                let empty = dir.join("llm.key");
                std::fs::write(&empty, "").map_err(|e| format!("writing the empty key: {e}"))?;
                pairs.push((
                    key("diagnoser.llm.api_key_file"),
                    empty.display().to_string(),
                ));
            }
            None => {}
        }
        Ok(pairs)
    }
}

/// One investigation as the harness saw it, by wall-clock time.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    id: String,
    incident_id: Option<String>,
    /// When it was last queued or (re)started: its wall-time limit runs from there.
    active_since: Instant,
    running_since: Option<Instant>,
    first_seen: Instant,
    end: Option<(Instant, End)>,
}

#[derive(Debug, Clone)]
enum End {
    Report(Box<InvestigationReport>),
    /// Not run: the diagnoser said why.
    Refused,
}

impl Observed {
    fn tracked(&mut self, id: &str, incident_id: Option<String>) -> &mut Tracked {
        let now = Instant::now();
        let at = match self.investigations.iter().position(|t| t.id == id) {
            Some(at) => at,
            None => {
                self.investigations.push(Tracked {
                    id: id.to_owned(),
                    incident_id,
                    active_since: now,
                    running_since: None,
                    first_seen: now,
                    end: None,
                });
                self.investigations.len() - 1
            }
        };
        &mut self.investigations[at]
    }

    pub(super) fn investigation_requested(&mut self, request: &InvestigationRequest) {
        self.tracked(&request.investigation_id, request.incident_id.clone());
    }

    pub(super) fn investigation_event(
        &mut self,
        incident_id: Option<String>,
        event: InvestigationEvent,
    ) {
        let tracked = self.tracked(&event.investigation_id, incident_id);
        let now = Instant::now();
        match event.update {
            InvestigationUpdate::Status(status) if status.state == InvestigationState::Running => {
                tracked.active_since = now;
                tracked.running_since = Some(now);
            }
            InvestigationUpdate::Status(status) if status.state == InvestigationState::Failed => {
                tracked.end = Some((now, End::Refused));
            }
            InvestigationUpdate::Report(report) => tracked.end = Some((now, End::Report(report))),
            InvestigationUpdate::Status(_) | InvestigationUpdate::Step(_) => {}
        }
    }

    /// When the harness stops waiting for the unfinished investigations: the latest start
    /// plus the wall-time limit and `grace` (none unfinished: `None`).
    fn investigations_deadline(&self, wall_limit: Duration, grace: Duration) -> Option<Instant> {
        self.investigations
            .iter()
            .filter(|t| t.end.is_none())
            .map(|t| t.active_since + wall_limit + grace)
            .max()
    }
}

/// Waits until every investigation seen has ended (its report or its refusal published), each
/// for at most its wall-time limit and `grace` from when it was queued or started; then until
/// the remediator has taken the reports up (it plans the proposals of a report about an
/// incident the rules escalated, which changes that incident's outcome) and the harness has
/// read what it recorded. `groups` are the remediator's and the harness's consumer groups.
pub(super) async fn wait_for_investigations(
    seen: &Arc<Mutex<Observed>>,
    bus: &MemoryBus,
    [remediator, runner]: [&str; 2],
    wall_limit: Duration,
    grace: Duration,
) {
    read_by(bus, runner, grace).await;
    loop {
        let deadline = seen
            .lock()
            .expect("observed lock")
            .investigations_deadline(wall_limit, grace);
        match deadline {
            Some(deadline) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => break,
        }
    }
    if !seen
        .lock()
        .expect("observed lock")
        .investigations
        .is_empty()
    {
        read_by(bus, remediator, grace).await;
        read_by(bus, runner, grace).await;
    }
}

/// Waits until `group` has read everything published, for at most `limit`.
async fn read_by(bus: &MemoryBus, group: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while bus.lag(group) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One investigation of a run.
#[derive(Debug, Clone, Serialize)]
pub struct InvestigationSeen {
    pub id: String,
    pub incident_id: Option<String>,
    /// `completed`, `failed`, `over_budget`; `queued` or `running` when it did not end in time.
    pub state: InvestigationState,
    pub stop_reason: Option<StopReason>,
    pub root_cause: Option<RootCause>,
    /// Model calls and tool calls.
    pub steps: u32,
    pub tool_calls: u32,
    /// Tool calls refused (or failed) instead of run.
    pub refused_calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Wall-clock seconds from when it started running (else was queued) to its report.
    pub wall_seconds: Option<f64>,
}

impl Tracked {
    pub(super) fn seen(&self) -> InvestigationSeen {
        let started = self.running_since.unwrap_or(self.first_seen);
        let mut out = InvestigationSeen {
            id: self.id.clone(),
            incident_id: self.incident_id.clone(),
            state: match (&self.end, self.running_since) {
                (Some(_), _) => InvestigationState::Failed,
                (None, Some(_)) => InvestigationState::Running,
                (None, None) => InvestigationState::Queued,
            },
            stop_reason: None,
            root_cause: None,
            steps: 0,
            tool_calls: 0,
            refused_calls: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            wall_seconds: self
                .end
                .as_ref()
                .map(|(at, _)| at.saturating_duration_since(started).as_secs_f64()),
        };
        if let Some((_, End::Report(report))) = &self.end {
            out.state = report.state;
            out.stop_reason = Some(report.stop_reason);
            out.root_cause = Some(report.root_cause);
            out.steps = report.steps.len() as u32;
            out.tool_calls = count(report, |s| s.kind == StepKind::ToolCall);
            out.refused_calls = count(report, |s| s.refused.is_some());
            out.prompt_tokens = report.usage.prompt_tokens;
            out.completion_tokens = report.usage.completion_tokens;
            out.cost_usd = report.usage.cost_usd;
        }
        out
    }
}

fn count(
    report: &InvestigationReport,
    which: impl Fn(&opsmesh_proto::investigation::InvestigationStep) -> bool,
) -> u32 {
    report.steps.iter().filter(|s| which(s)).count() as u32
}

/// The investigations of some runs together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InvestigationFigures {
    pub investigations: u32,
    /// Investigations by final state (`queued` / `running`: had not ended when the run did).
    pub states: BTreeMap<String, u32>,
    pub steps: u64,
    pub tool_calls: u64,
    pub refused_calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Mean wall-clock time of the investigations that ended.
    pub wall_time: Mean,
}

impl InvestigationFigures {
    pub(super) fn add(&mut self, i: &InvestigationSeen) {
        self.investigations += 1;
        *self.states.entry(i.state.to_string()).or_default() += 1;
        self.steps += u64::from(i.steps);
        self.tool_calls += u64::from(i.tool_calls);
        self.refused_calls += u64::from(i.refused_calls);
        self.prompt_tokens += i.prompt_tokens;
        self.completion_tokens += i.completion_tokens;
        self.cost_usd += i.cost_usd;
        self.wall_time
            .add(i.wall_seconds.map(Duration::from_secs_f64));
    }

    pub(super) fn merge(&mut self, other: &InvestigationFigures) {
        self.investigations += other.investigations;
        for (state, n) in &other.states {
            *self.states.entry(state.clone()).or_default() += n;
        }
        self.steps += other.steps;
        self.tool_calls += other.tool_calls;
        self.refused_calls += other.refused_calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
        self.wall_time.merge(other.wall_time);
    }
}

#[cfg(test)]
mod tests {
    use opsmesh_proto::investigation::InvestigationStatus;

    use super::*;

    fn tree(toml: &str) -> ConfigTree {
        ConfigTree::load_layered(Some(toml), None, Vec::new()).unwrap()
    }

    fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_options_win_and_a_keyless_endpoint_gets_an_empty_key() {
        let dir = tempfile::tempdir().unwrap();
        let run = InvestigatorRun {
            llm_url: Some("http://localhost:11434/v1".into()),
            llm_model: Some("qwen2.5:7b".into()),
            llm_api_key_env: None,
            below_confidence: Some(1.0),
        };
        let pairs = run.overrides(&tree(""), dir.path()).unwrap();
        assert_eq!(
            value(&pairs, "OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED"),
            Some("true")
        );
        assert_eq!(
            value(&pairs, "OPSMESH__DIAGNOSER__INVESTIGATOR__BELOW_CONFIDENCE"),
            Some("1")
        );
        assert_eq!(
            value(&pairs, "OPSMESH__DIAGNOSER__LLM__MODEL"),
            Some("qwen2.5:7b")
        );
        let key_file = value(&pairs, "OPSMESH__DIAGNOSER__LLM__API_KEY_FILE").unwrap();
        assert_eq!(std::fs::read_to_string(key_file).unwrap(), "");
        // Over a file that says otherwise, as the harness layers them.
        let file = dir.path().join("opsmesh.toml");
        std::fs::write(
            &file,
            "[diagnoser.llm]\nbase_url = \"https://api.openai.com/v1\"\nmodel = \"gpt-4o\"\n",
        )
        .unwrap();
        let harness = defaults(
            "\"/kubeconfig\"",
            "http://127.0.0.1:1",
            &["ml-team-a".into()],
        );
        let config: opsmesh_diagnoser::DiagnoserConfig =
            ConfigTree::load_layered(Some(&harness), Some(&file), pairs)
                .unwrap()
                .section("diagnoser")
                .unwrap();
        assert!(config.investigator.enabled);
        assert_eq!(config.investigator.below_confidence, 1.0);
        assert_eq!(config.llm.base_url, "http://localhost:11434/v1");
        assert_eq!(config.llm.model, "qwen2.5:7b");
        assert_eq!(config.investigator.namespaces, ["ml-team-a"]);
    }

    #[test]
    fn a_configured_key_is_kept_and_a_key_file_conflicts_with_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let keyless = InvestigatorRun::default();
        let configured = tree("[diagnoser.llm]\napi_key_env = \"GROQ_API_KEY\"\n");
        let pairs = keyless.overrides(&configured, dir.path()).unwrap();
        assert!(
            pairs.iter().all(|(k, _)| !k.contains("API_KEY")),
            "{pairs:?}"
        );
        let with_env = InvestigatorRun {
            llm_api_key_env: Some("MY_KEY".into()),
            ..InvestigatorRun::default()
        };
        let pairs = with_env.overrides(&configured, dir.path()).unwrap();
        assert_eq!(
            value(&pairs, "OPSMESH__DIAGNOSER__LLM__API_KEY_ENV"),
            Some("MY_KEY")
        );
        let key_file = tree("[diagnoser.llm]\napi_key_file = \"/run/secrets/llm\"\n");
        let refused = with_env.overrides(&key_file, dir.path()).unwrap_err();
        assert!(refused.starts_with("--llm-api-key-env:"), "{refused}");
    }

    fn event(id: &str, update: InvestigationUpdate) -> InvestigationEvent {
        InvestigationEvent {
            investigation_id: id.into(),
            question: "why?".into(),
            namespace: None,
            update,
        }
    }

    fn status(state: InvestigationState) -> InvestigationUpdate {
        InvestigationUpdate::Status(InvestigationStatus {
            state,
            requested_by: "diagnoser".into(),
            detail: String::new(),
        })
    }

    #[test]
    fn the_wait_ends_with_the_last_report_or_a_wall_time_after_the_latest_start() {
        let wall = Duration::from_secs(60);
        let grace = Duration::from_secs(5);
        let mut o = Observed::default();
        assert_eq!(o.investigations_deadline(wall, grace), None);
        o.investigation_requested(&InvestigationRequest {
            investigation_id: "inc-1/1".into(),
            incident_id: Some("inc-1".into()),
            question: None,
            namespace: None,
            requested_by: "diagnoser".into(),
            facts: None,
        });
        let queued = o.investigations_deadline(wall, grace).unwrap();
        o.investigation_event(None, event("inc-2/1", status(InvestigationState::Failed)));
        assert_eq!(o.investigations_deadline(wall, grace), Some(queued));
        std::thread::sleep(Duration::from_millis(5));
        o.investigation_event(None, event("inc-1/1", status(InvestigationState::Running)));
        assert!(o.investigations_deadline(wall, grace).unwrap() > queued);
        assert_eq!(
            o.investigations[0].seen().state,
            InvestigationState::Running
        );
        assert_eq!(o.investigations[1].seen().state, InvestigationState::Failed);
        assert_eq!(
            o.investigations[0].seen().incident_id.as_deref(),
            Some("inc-1")
        );
    }
}
