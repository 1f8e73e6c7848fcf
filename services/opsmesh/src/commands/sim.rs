//! `opsmesh sim`: the cluster simulator on its own, for kubectl, kube-rs, the collector and the
//! remediator to talk to.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;

use opsmesh_runtime::launcher;
use opsmesh_sim::{Clock, Rbac, Scenario, SimConfig, SimServer, Simulator};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to serve the Kubernetes, ArgoCD and OpenCost APIs on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Scenario file whose `state` and `faults` the cluster starts with.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Virtual seconds per wall-clock second (`POST /_sim/advance?by=5m` jumps ahead).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Write a kubeconfig pointing at the simulator to this file.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Bearer token the ArgoCD API accepts.
    #[arg(long, default_value = "sim-argocd-token")]
    pub argocd_token: String,
    /// RBAC allow-list (YAML: `{subject, rules: [{verbs, resources, namespaces}]}`); anything
    /// else is answered 403.
    #[arg(long)]
    pub rbac: Option<PathBuf>,
}

pub fn run(args: SimArgs) -> ExitCode {
    let rbac = match &args.rbac {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_saphyr_rbac(&t))
        {
            Ok(r) => Some(r),
            Err(e) => return launcher::fail(&format!("--rbac {}: {e}", path.display())),
        },
    };
    let scenario = match &args.scenario {
        None => None,
        Some(path) => match Scenario::load(path) {
            Ok(s) => Some(s),
            Err(e) => return launcher::fail(&e),
        },
    };
    let config = SimConfig {
        argocd_token: args.argocd_token.clone(),
        rbac,
        ..SimConfig::default()
    };
    let sim = Simulator::new(config, Clock::scaled(chrono::Utc::now(), args.speed));
    if let Some(s) = &scenario {
        sim.seed(&s.state);
        for (at, fault, target) in s.resolved_faults() {
            sim.inject(at, fault, target);
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let server = match SimServer::start(sim.clone(), args.listen) {
            Ok(s) => s,
            Err(e) => return launcher::fail(&format!("cannot listen on {}: {e}", args.listen)),
        };
        if let Some(path) = &args.kubeconfig
            && let Err(e) = std::fs::write(path, server.kubeconfig_yaml("default"))
        {
            return launcher::fail(&format!("writing {}: {e}", path.display()));
        }
        println!("opsmesh sim: Kubernetes API {}", server.url());
        println!(
            "  ArgoCD    {} (Authorization: Bearer {})",
            server.argocd_url(),
            server.argocd_token()
        );
        println!(
            "  OpenCost  {}/allocation/compute?window=1h&aggregate=namespace",
            server.opencost_url()
        );
        println!(
            "  control   {}/_sim/requests, /_sim/state, POST /_sim/advance?by=5m",
            server.url()
        );
        if let Some(path) = &args.kubeconfig {
            println!("  kubeconfig written to {}", path.display());
        }
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        ExitCode::SUCCESS
    })
}

fn serde_saphyr_rbac(text: &str) -> Result<Rbac, String> {
    opsmesh_sim::scenario::parse_yaml::<Rbac>(text)
}
