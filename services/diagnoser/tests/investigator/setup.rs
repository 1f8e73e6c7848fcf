//! The investigator's test harness: the scripted model, both Splunk doubles serving the
//! fixture rows, and the simulator with gpt-oss-120b OOM-looping.

use std::{path::Path, sync::Arc, time::Duration};

use kube::config::{KubeConfigOptions, Kubeconfig};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{Value, json};

use opsmesh_diagnoser::{
    investigator::{Investigator, InvestigatorConfig, Subject, Toolbox},
    llm::{Endpoint, LlmConfig},
    splunk::SplunkConfig,
    splunk_mcp::{McpConfig, SplunkSearcher},
};
use opsmesh_proto::investigation::{InvestigationReport, StepKind};
use opsmesh_runbooks::Library;
use opsmesh_sim::{Scenario, SimConfig, SimServer, Simulator};
use opsmesh_testkit::{
    openai::{ScriptedModel, Turn},
    splunk_export::{Fixture, SplunkExport},
    splunk_mcp::SplunkMcp,
};

pub const KEY: &str = "sk-investigator-test";
pub const SPLUNK_TOKEN: &str = "splunk-investigator-token";
pub const TARGET: &str = "inferenceservice/ml-team-a/gpt-oss-120b";

pub const OOM_LOOP: &str = r#"
name: investigator-oom
cluster: sim-test
state:
  namespaces:
    - name: ml-team-a
      hourly_budget_usd: 40
    - name: kube-system
  inference_services:
    - namespace: ml-team-a
      name: gpt-oss-120b
      replicas: 2
      gpu: 1
      memory_limit: 256Mi
      image: registry.example.com/kserve/gpt-oss:1.4.2
      hourly_cost_usd: 12.5
      argocd_app: ml-team-a-models
  argocd_apps:
    - name: ml-team-a-models
      namespace: ml-team-a
faults:
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {memory_demand: 480Mi}}
expect: {}
"#;

pub struct Setup {
    pub model: ScriptedModel,
    /// The Splunk REST export double.
    pub splunk: SplunkExport,
    /// The Splunk MCP Server double, serving the same fixtures.
    pub mcp: SplunkMcp,
    pub investigator: Investigator,
    pub registry: Registry,
    _sim: SimServer,
    _key_dir: tempfile::TempDir,
}

/// Which way the investigator's Splunk searches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    RestExport,
    Mcp,
}

/// The investigator over the REST export double, the simulator and the scripted `turns`.
pub async fn setup(turns: Vec<Turn>, adjust: impl FnOnce(&mut InvestigatorConfig)) -> Setup {
    setup_via(Via::RestExport, turns, adjust).await
}

/// As [`setup`], Splunk configured the `via` way only (both doubles run).
pub async fn setup_via(
    via: Via,
    turns: Vec<Turn>,
    adjust: impl FnOnce(&mut InvestigatorConfig),
) -> Setup {
    let model = ScriptedModel::start(KEY, turns).await;
    let fixtures = Fixture::load_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/investigator"),
    );
    let splunk = SplunkExport::start(SPLUNK_TOKEN, fixtures.clone()).await;
    let mcp = SplunkMcp::start(SPLUNK_TOKEN, fixtures).await;
    let scenario = Scenario::parse(OOM_LOOP, "investigator.yaml").expect("valid scenario");
    let sim = Simulator::from_scenario(&scenario, SimConfig::default());
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).expect("bind");
    sim.advance(Duration::from_secs(300));
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig_yaml("default")).unwrap();
    let kube = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap(),
    )
    .unwrap();

    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let llm = LlmConfig {
        base_url: model.url().into(),
        api_key_file: Some(key_file),
        model: "test-model".into(),
        timeout: Duration::from_secs(5),
        ..LlmConfig::default()
    };
    let (rest, over_mcp) = match via {
        Via::RestExport => (Some(splunk.url()), None),
        Via::Mcp => (None, Some(mcp.url())),
    };
    let searcher = SplunkSearcher::from_config(
        &SplunkConfig {
            url: rest.map(str::to_owned),
            token: rest.map(|_| SPLUNK_TOKEN.into()),
            ..SplunkConfig::default()
        },
        &McpConfig {
            url: over_mcp.map(str::to_owned),
            token: over_mcp.map(|_| SPLUNK_TOKEN.into()),
            ..McpConfig::default()
        },
    )
    .unwrap();
    let mut config = InvestigatorConfig {
        namespaces: vec!["ml-team-a".into(), "argocd".into()],
        opencost_url: Some(server.opencost_url()),
        ..InvestigatorConfig::default()
    };
    adjust(&mut config);
    let registry = Registry::new();
    let tools = Toolbox::new(
        &config,
        searcher,
        Some(kube),
        Arc::new(Library::built_in().unwrap()),
    )
    .unwrap();
    let investigator = Investigator::new(
        &config,
        Arc::new(Endpoint::new(&llm).unwrap()),
        tools,
        &registry,
    );
    Setup {
        model,
        splunk,
        mcp,
        investigator,
        registry,
        _sim: server,
        _key_dir: key_dir,
    }
}

pub fn subject() -> Subject {
    Subject {
        incident_id: Some("inc-42".into()),
        question: "Why is gpt-oss-120b failing, and what should be done?".into(),
        namespace: Some("ml-team-a".into()),
        facts: json!({"alert": "KServe model error rate above 5%", "target": TARGET}),
    }
}

pub fn metrics(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

pub fn models_search() -> Value {
    json!({
        "spl": "index=opsmesh sourcetype=\"opsmesh:models\" \"payload.record.name\"=\"gpt-oss-120b\" | stats max(oom_killed) as oom_killed latest(last_termination_reason) as reason",
        "earliest": "-1h",
    })
}

pub fn report_answer(findings: Value, actions: Value) -> Turn {
    Turn::answer(
        json!({
            "summary": "gpt-oss-120b is OOMKilled: its 256Mi limit is below the 480Mi it needs",
            "root_cause": "oom_killed",
            "risk": "high",
            "findings": findings,
            "proposed_actions": actions,
        })
        .to_string(),
    )
}

pub fn patch_memory(cites: &[&str]) -> Value {
    json!({"kind": "patch_memory_limit", "target": TARGET,
           "params": {"memory_limit": "640Mi"}, "evidence_ids": cites,
           "rationale": "peak working set 480Mi x 1.3"})
}

pub fn kinds(report: &InvestigationReport) -> Vec<(StepKind, Option<&str>)> {
    report
        .steps
        .iter()
        .map(|s| (s.kind, s.tool.as_deref()))
        .collect()
}

/// The name of the simulator's gpt-oss-120b predictor pod (pod names are deterministic, so a
/// script can name it before the investigation runs).
pub fn predictor_pod() -> String {
    let scenario = Scenario::parse(OOM_LOOP, "investigator.yaml").expect("valid scenario");
    let sim = Simulator::from_scenario(&scenario, SimConfig::default());
    let state = sim.with_world(|w| w.dump());
    state["objects"]["pods"]
        .as_object()
        .and_then(|pods| pods.keys().find_map(|k| k.strip_prefix("ml-team-a/")))
        .expect("a predictor pod")
        .to_owned()
}
