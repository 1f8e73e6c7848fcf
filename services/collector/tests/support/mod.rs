#![allow(dead_code)] // each test binary uses part of it

//! The collector's test fixture: a multi-namespace cluster in the simulator, configuration
//! trees pointing the collector at it, and a collector built from one.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use opsmesh_collector::{Collector, CollectorConfig};
use opsmesh_proto::telemetry::TelemetryRecord;
use opsmesh_runtime::{ConfigTree, Context, bus::MemoryBus};
use opsmesh_sim::{Scenario, SimConfig, SimServer, Simulator};

pub const CLUSTER: &str = r#"
name: collector-cluster
state:
  namespaces:
    - name: ml-team-a
      hourly_budget_usd: 40
    - name: ml-team-b
  inference_services:
    - {namespace: ml-team-a, name: gpt-oss-120b, replicas: 2, gpu: 1, memory_limit: 256Mi, hourly_cost_usd: 12.5, image: "registry.example.com/kserve/gpt-oss:1.4.2", previous_image: "registry.example.com/kserve/gpt-oss:1.4.1"}
    - {namespace: ml-team-a, name: embedder, memory_limit: 512Mi, hourly_cost_usd: 2.0}
    - {namespace: ml-team-b, name: llama-3-8b, image: "registry.example.com/kserve/llama:3.8.0", argocd_app: ml-team-b-models, hourly_cost_usd: 4.0}
    - {namespace: ml-team-b, name: whisper, argocd_app: ml-team-b-models}
  argocd_apps:
    - {name: ml-team-b-models, namespace: ml-team-b}
  policies:
    - {name: disallow-root-containers, action: enforce}
faults:
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {memory_demand: 480Mi}}
  - {at: 0s, kind: policy_denial, target: inferenceservice/ml-team-b/llama-3-8b, params: {policy: disallow-root-containers, reason: "runAsNonRoot must be true"}}
expect: {}
"#;

pub struct Fixture {
    pub sim: Simulator,
    pub server: SimServer,
    pub dir: tempfile::TempDir,
}

pub async fn fixture() -> Fixture {
    let scenario = Scenario::parse(CLUSTER, "cluster.yaml").unwrap();
    let sim = Simulator::from_scenario(&scenario, SimConfig::default());
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    sim.advance(Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        server.kubeconfig_yaml("default"),
    )
    .unwrap();
    Fixture { sim, server, dir }
}

pub fn tree(f: &Fixture, extra: &str) -> ConfigTree {
    tree_with_opencost(f, &f.server.opencost_url(), "", extra)
}

/// [`tree`] with the collector reading OpenCost at `opencost`, with `opencost_settings` in
/// `[collector.opencost]`.
pub fn tree_with_opencost(
    f: &Fixture,
    opencost: &str,
    opencost_settings: &str,
    extra: &str,
) -> ConfigTree {
    let toml = format!(
        "cluster = \"sim-eu-1\"\n[http]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[bus]\nkind = \"memory\"\n[collector]\ninterval = \"200ms\"\nsource_timeout = \"2s\"\nkubeconfig = \"{kc}\"\n[collector.opencost]\nurl = \"{oc}\"\nwindow = \"1h\"\n{opencost_settings}\n[collector.argocd]\nurl = \"{argo}\"\ntoken = \"{token}\"\n{extra}",
        kc = f.dir.path().join("kubeconfig").display(),
        oc = opencost,
        argo = f.server.argocd_url(),
        token = f.server.argocd_token(),
    );
    ConfigTree::load_layered(Some(&toml), None, Vec::<(String, String)>::new()).unwrap()
}

pub async fn collector(tree: &ConfigTree) -> (Collector, Context, MemoryBus) {
    let settings = tree.settings().unwrap();
    let bus = MemoryBus::new(&settings.bus.memory);
    let ctx = Context::new(settings, Arc::new(bus.clone()));
    let config: CollectorConfig = tree.section("collector").unwrap();
    (Collector::new(config, &ctx).await.unwrap(), ctx, bus)
}

pub fn by_key(records: &[(String, TelemetryRecord)]) -> BTreeMap<String, TelemetryRecord> {
    let map: BTreeMap<_, _> = records.iter().cloned().collect();
    map
}
