//! The ArgoCD token is read from its file at each request: after a rotation (the mounted
//! Secret changes and ArgoCD accepts only the new token) the remediator keeps acting,
//! without a restart. Against the simulator's ArgoCD API.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use opsmesh_proto::{
    ActionKind,
    remediation::{ActionMode, ActionRecord},
};
use opsmesh_remediator::{cluster::Cluster, config::ArgoCdConfig};
use opsmesh_runtime::secret::{self, Secret};
use opsmesh_sim::{Scenario, SimConfig, SimServer, Simulator};

const CLUSTER: &str = "
name: argocd-token
state:
  namespaces:
    - {name: payments}
  inference_services:
    - {namespace: payments, name: fraud, argocd_app: payments-models}
  argocd_apps:
    - {name: payments-models, namespace: payments}
expect: {}
";

fn sync(app: &str) -> ActionRecord {
    ActionRecord {
        kind: ActionKind::ArgocdSync,
        target: format!("application/payments/{app}"),
        params: BTreeMap::new(),
        idempotency_key: "argocd-token".into(),
        mode: ActionMode::Auto,
        approved_by: None,
    }
}

/// Writes `token` to `path` with a modification time of its own, whatever the file system's
/// resolution (a rotation within the same second must still be seen).
fn rotate(path: &std::path::Path, token: &str, age: u64) {
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(age))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_used_without_a_restart() {
    let scenario = Scenario::parse(CLUSTER, "argocd-token.yaml").unwrap();
    let config = SimConfig {
        argocd_token: "token-before".into(),
        ..SimConfig::default()
    };
    let sim = Simulator::from_scenario(&scenario, config);
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("argocd-token");
    rotate(&token_file, "token-before", 0);

    let argocd = ArgoCdConfig {
        url: Some(server.argocd_url()),
        token_file: Some(token_file.clone()),
        ..ArgoCdConfig::default()
    };
    let token = Secret::load(
        "remediator.argocd.token",
        &argocd.token_source(),
        secret::trimmed,
    )
    .unwrap()
    .expect("token_file is set");
    let cluster = Cluster::new(
        None,
        Some((server.argocd_url(), token)),
        "opsmesh".into(),
        Duration::from_secs(5),
    )
    .unwrap();
    let action = sync("payments-models");
    cluster
        .is_done(&action, "i-1")
        .await
        .expect("the first token is accepted");

    // ArgoCD now accepts only the new token, and the mounted Secret holds it.
    sim.with_world(|w| w.config.argocd_token = "token-after".into());
    rotate(&token_file, "token-after", 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cluster.is_done(&action, "i-1").await {
            Ok(_) => break,
            Err(err) if Instant::now() < deadline => {
                // At most a second's grace: the file is looked at once a second.
                assert!(err.to_string().contains("401"), "{err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the rotated token was never used: {err}"),
        }
    }
    server.stop().await;
}
