//! After the incidents: the operator console (the reporter alone, on an in-memory bus) with
//! the played incidents replayed onto its topics, opened by a one-time sign-in link.
//!
//! Only the reporter runs: the replayed alerts and diagnoses must not be diagnosed or
//! remediated again, so nothing acts on them and the link signs in a viewer.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::Value;

use opsmesh_reporter::timeline::TIMELINE_TOPICS;
use opsmesh_runtime::{
    Bus, ConfigError, ConfigTree,
    bus::{MemoryBus, Outgoing},
    launcher, shutdown,
};

/// The user the sign-in link signs in.
const LINK_USER: &str = "demo";

/// A one-time sign-in link's token, written where the console reads it.
pub(super) struct SigninLink {
    pub(super) file: PathBuf,
    token: String,
}

impl SigninLink {
    /// A fresh random token in `dir/console-signin-link` (private to this user).
    pub(super) fn create(dir: &Path) -> std::io::Result<Self> {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let file = dir.join("console-signin-link");
        super::super::write_private(&file, &format!("{LINK_USER}:{token}:viewer\n"))?;
        Ok(Self { file, token })
    }
}

/// The console's configuration: the reporter on loopback (`http.listen`, default
/// 127.0.0.1:8080), in-memory bus, HEC to `hec_file` unless a Splunk URL is configured,
/// the console on plain HTTP with the sign-in link; then `config` and the environment.
pub(super) fn tree(
    config: Option<&Path>,
    link: &SigninLink,
    hec_file: &Path,
) -> Result<ConfigTree, ConfigError> {
    let probe = ConfigTree::load(config)?;
    let mut defaults = format!(
        "[http]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9090\"\n\
         [bus]\nkind = \"memory\"\n\
         [reporter.console]\nenabled = true\ncookie_secure = false\nsignin_link_file = {:?}\n",
        link.file.display().to_string()
    );
    if !probe.contains("reporter.hec.url") {
        defaults.push_str(&format!(
            "[reporter.hec]\nfile = {:?}\n",
            hec_file.display().to_string()
        ));
    }
    ConfigTree::load_layered(Some(&defaults), config, std::env::vars())
}

/// Serves the console with the incidents of `hec_files` until Ctrl-C; `ready` is told the
/// sign-in link and the health and metrics address once the console listens.
pub(super) async fn serve(
    tree: &ConfigTree,
    hec_files: &[PathBuf],
    link: &SigninLink,
    ready: impl FnOnce(&str, SocketAddr),
) -> Result<(), String> {
    let settings = tree.settings().map_err(|e| e.to_string())?;
    let bus = MemoryBus::new(&settings.bus.memory);
    for path in hec_files {
        replay(&bus, &super::print::read_events(path)).await?;
    }
    let shared: Arc<dyn Bus> = Arc::new(bus);
    let app = launcher::build(tree, settings, &[&opsmesh_reporter::SERVICE], Some(shared))
        .await
        .map_err(|e| e.to_string())?;
    ready(
        &format!(
            "http://{}/console/login?token={}",
            app.local_addr(),
            link.token
        ),
        app.admin_addr(),
    );
    shutdown::cancel_on_signal(app.shutdown_token());
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

/// Publishes the incident envelopes inside HEC events (what Splunk indexed) back onto the
/// topics they came from.
async fn replay(bus: &MemoryBus, events: &[Value]) -> Result<(), String> {
    for envelope in events.iter().map(|e| &e["event"]) {
        let (Some(topic), Some(incident)) = (
            envelope["schema"].as_str(),
            envelope["incident_id"].as_str(),
        ) else {
            continue;
        };
        let Some(topic) = TIMELINE_TOPICS.iter().find(|t| **t == topic) else {
            continue;
        };
        let payload = serde_json::to_vec(envelope).map_err(|e| e.to_string())?;
        bus.publish(Outgoing {
            topic: (*topic).into(),
            key: incident.to_owned(),
            payload,
            headers: Vec::new(),
        })
        .await
        .map_err(|e| format!("replaying {incident} onto {topic}: {e}"))?;
    }
    Ok(())
}
