//! The configuration the Kubernetes manifests give each service (deploy/k8s/base/config/*.env)
//! is accepted by that service's own configuration types: a key renamed in code or mistyped in
//! a manifest fails here, not at 3 a.m. in a crash-looping pod.

use opsmesh_runtime::ConfigTree;

fn env_file(name: &str) -> Vec<(String, String)> {
    let path = opsmesh_tests::workspace_root()
        .join("deploy/k8s/base/config")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: not KEY=VALUE: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn tree(service: &str) -> ConfigTree {
    let mut env = env_file("common.env");
    env.extend(env_file(&format!("{service}.env")));
    let tree = ConfigTree::load_with_env(None, env).unwrap_or_else(|e| panic!("{service}: {e}"));
    tree.settings().unwrap_or_else(|e| panic!("{service}: {e}"));
    tree
}

#[test]
fn every_manifest_configuration_is_valid_for_its_service() {
    tree("alert-receiver")
        .section::<opsmesh_alert_receiver::ReceiverConfig>("receiver")
        .expect("receiver");
    tree("collector")
        .section::<opsmesh_collector::CollectorConfig>("collector")
        .expect("collector");
    tree("diagnoser")
        .section::<opsmesh_diagnoser::DiagnoserConfig>("diagnoser")
        .expect("diagnoser");
    tree("remediator")
        .section::<opsmesh_remediator::RemediatorConfig>("remediator")
        .expect("remediator");
    tree("reporter")
        .section::<opsmesh_reporter::ReporterConfig>("reporter")
        .expect("reporter");
}
