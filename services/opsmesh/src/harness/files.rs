//! The files one scenario run needs: a kubeconfig for the simulator, the receiver's secrets
//! and tokens, the HEC output file, and the mesh configuration pointing at all of them (the
//! investigator's reads too, should it be on).

use std::path::{Path, PathBuf};

use opsmesh_sim::{Scenario, SimServer};

use super::{SOURCE, investigations};

/// The run's private directory (removed when dropped) and what is in it.
pub(super) struct Files {
    pub(super) dir: tempfile::TempDir,
    pub(super) hec: PathBuf,
    pub(super) secret: String,
    pub(super) path_token: String,
    pub(super) bearer: String,
    pub(super) toml: String,
}

pub(super) fn prepare(scenario: &Scenario, server: &SimServer) -> std::io::Result<Files> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig_yaml("default"))?;
    let hec = dir.path().join("hec.jsonl");
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let path_token = uuid::Uuid::new_v4().simple().to_string();
    let bearer = uuid::Uuid::new_v4().simple().to_string();
    let write = |name: &str, value: &str| -> std::io::Result<PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, value)?;
        Ok(p)
    };
    let secrets_file = write("signing.secret", &secret)?;
    let path_file = write("path.token", &path_token)?;
    let bearer_file = write("bearer.tokens", &bearer)?;
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let toml = format!(
        "cluster = {cluster:?}\n\
         [http]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [log]\nlevel = \"warn\"\n\
         [bus]\nkind = \"memory\"\n\
         [receiver.sources.{SOURCE}]\nsecrets_file = {sf}\npath_token_file = {pf}\nbearer_tokens_file = {bf}\n\
         [reporter.hec]\nfile = {hec}\n\
         [collector]\ninterval = \"250ms\"\nsource_timeout = \"2s\"\nkubeconfig = {kc}\n\
         [collector.opencost]\nurl = {oc:?}\nwindow = \"10m\"\n\
         [collector.argocd]\nurl = {argo:?}\ntoken = {token:?}\n\
         [remediator]\nkubeconfig = {kc}\nrequest_timeout = \"5s\"\n\
         [remediator.argocd]\nurl = {argo:?}\ntoken = {token:?}\n\
         [remediator.verification]\nattempts = 20\ninterval = \"100ms\"\n\
         [remediator.policy]\nmode = {mode:?}\n{allowed}{investigator}",
        cluster = scenario.cluster,
        sf = q(&secrets_file),
        pf = q(&path_file),
        bf = q(&bearer_file),
        hec = q(&hec),
        kc = q(&kubeconfig),
        oc = server.opencost_url(),
        argo = server.argocd_url(),
        token = server.argocd_token(),
        mode = scenario
            .policy
            .as_ref()
            .map_or("auto", |p| opsmesh_remediator::plan::mode_name(p.mode)),
        allowed = allowed_namespaces(scenario),
        investigator = investigations::defaults(
            &q(&kubeconfig),
            &server.opencost_url(),
            &declared_namespaces(scenario)
        ),
    );
    Ok(Files {
        dir,
        hec,
        secret,
        path_token,
        bearer,
        toml,
    })
}

/// The remediator's allow-list line for `scenario`: the policy's `allowed_namespaces`, else
/// every namespace its simulated cluster declares. The contract makes `allowed_namespaces`
/// optional and a scenario under `mode: auto` expects auto to act; the product's own default
/// (no allow-list: every action waits for approval) is for real clusters, not for this one.
pub(super) fn allowed_namespaces(scenario: &Scenario) -> String {
    let list = scenario
        .policy
        .as_ref()
        .and_then(|p| p.allowed_namespaces.clone())
        .unwrap_or_else(|| declared_namespaces(scenario));
    format!("allowed_namespaces = {list:?}\n")
}

/// Every namespace the scenario's simulated cluster declares, in order.
fn declared_namespaces(scenario: &Scenario) -> Vec<String> {
    let state = &scenario.state;
    let mut declared: Vec<String> = Vec::new();
    let names = state
        .namespaces
        .iter()
        .map(|n| &n.name)
        .chain(state.inference_services.iter().map(|s| &s.namespace))
        .chain(state.argocd_apps.iter().map(|a| &a.namespace));
    for name in names {
        if !declared.contains(name) {
            declared.push(name.clone());
        }
    }
    declared
}
