//! The five services in this process on the in-memory bus (what `opsmesh up` runs without a
//! broker), reporting to a HEC test server.

use std::{net::SocketAddr, sync::Arc};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{ConfigTree, bus::MemoryBus, launcher};

use crate::{hec::HecServer, mesh::signed_post};

pub struct InProcessMesh {
    /// The alert receiver's listener.
    pub addr: SocketAddr,
    /// Health and metrics of every service.
    pub admin: SocketAddr,
    pub bus: Arc<MemoryBus>,
    stop: CancellationToken,
    running: JoinHandle<Result<(), String>>,
    _secrets: tempfile::NamedTempFile,
}

impl InProcessMesh {
    /// Starts the mesh with the splunk source's signing secret, loopback listeners on free
    /// ports, `hec` as Splunk, and `extra` settings (`OPSMESH__…` variables) on top.
    pub async fn start(hec: &HecServer, extra: &[(&str, &str)]) -> Self {
        let secrets = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(secrets.path(), format!("{}\n", crate::mesh::SECRET)).expect("written");
        let mut env: Vec<(String, String)> = [
            (
                "OPSMESH__RECEIVER__SOURCES__SPLUNK__SECRETS_FILE",
                secrets.path().display().to_string(),
            ),
            ("OPSMESH__BUS__KIND", "memory".to_owned()),
            ("OPSMESH__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
            ("OPSMESH__HTTP__ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
            ("OPSMESH__REPORTER__HEC__URL", hec.url().to_owned()),
            ("OPSMESH__REPORTER__HEC__TOKEN", HecServer::TOKEN.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let tree = ConfigTree::load_with_env(None, env).expect("configuration");
        let settings = tree.settings().expect("settings");
        let bus = Arc::new(MemoryBus::new(&settings.bus.memory));
        let app = launcher::build(&tree, settings, opsmesh::SERVICES, Some(bus.clone()))
            .await
            .expect("mesh builds");
        let (addr, admin) = (app.local_addr(), app.admin_addr());
        let stop = app.shutdown_token();
        let running =
            tokio::spawn(async move { app.run_until_stopped().await.map_err(|e| e.to_string()) });
        Self {
            addr,
            admin,
            bus,
            stop,
            running,
            _secrets: secrets,
        }
    }

    /// Posts the sample Splunk webhook, signed; returns the incident key of the 202.
    pub async fn post_sample_alert(&self) -> String {
        let sample = std::fs::read_to_string(crate::sample("splunk-webhook.json")).expect("sample");
        let body: Value = serde_json::from_str(&sample).expect("sample is JSON");
        let url = format!("http://{}/v1/alerts/splunk", self.addr);
        let response = signed_post(&reqwest::Client::new(), &url, &body)
            .send()
            .await
            .expect("receiver answers");
        assert_eq!(response.status(), 202);
        let reply: Value = response.json().await.expect("JSON reply");
        reply["incident_key"]
            .as_str()
            .expect("incident_key")
            .to_owned()
    }

    /// Stops every service; panics unless they stopped cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        self.running
            .await
            .expect("mesh task")
            .expect("clean shutdown");
    }
}
