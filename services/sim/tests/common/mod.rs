#![allow(dead_code)]

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use opsmesh_sim::{Scenario, SimConfig, SimServer, Simulator};

pub struct Running {
    pub sim: Simulator,
    pub server: SimServer,
    pub client: Client,
}

/// A simulator for `yaml` (a scenario file), served on a free port, with a kube-rs client
/// built from the kubeconfig the simulator writes — as the collector and remediator build theirs.
pub async fn start(yaml: &str, config: SimConfig) -> Running {
    let scenario = Scenario::parse(yaml, "test.yaml").expect("valid scenario");
    let sim = Simulator::from_scenario(&scenario, config);
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).expect("bind");
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig_yaml("default")).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    Running {
        sim,
        server,
        client,
    }
}

pub const TWO_TEAMS: &str = r#"
name: two-teams
cluster: sim-test
state:
  namespaces:
    - name: ml-team-a
      hourly_budget_usd: 40
    - name: ml-team-b
  inference_services:
    - namespace: ml-team-a
      name: gpt-oss-120b
      replicas: 2
      gpu: 1
      memory_limit: 256Mi
      image: registry.example.com/kserve/gpt-oss:1.4.2
      previous_image: registry.example.com/kserve/gpt-oss:1.4.1
      hourly_cost_usd: 12.5
    - namespace: ml-team-a
      name: embedder
      memory_limit: 512Mi
      hourly_cost_usd: 2.0
    - namespace: ml-team-b
      name: llama-3-8b
      image: registry.example.com/kserve/llama:3.8.0
      argocd_app: ml-team-b-models
  argocd_apps:
    - name: ml-team-b-models
      namespace: ml-team-b
expect: {}
"#;
