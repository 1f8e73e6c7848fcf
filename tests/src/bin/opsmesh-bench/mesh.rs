//! The whole mesh in this process for the `e2e` and `incidents` benchmarks.

use std::{sync::Arc, time::Duration};

use opsmesh_runtime::{Bus, bus::MemoryBus};

use crate::{arg, micros_since_epoch, usage};

/// The whole mesh in this process (every service, the chosen bus) writing to a HEC test
/// server, with alerts signed by the secret `bench`.
pub struct Mesh {
    pub base: String,
    pub hec: opsmesh_tests::hec::HecServer,
    pub label: String,
    /// Set when `reporter.hec.linger` was configured (else the 200 ms default applies).
    pub linger: bool,
    pub stop: tokio_util::sync::CancellationToken,
    pub running: tokio::task::JoinHandle<Result<(), opsmesh_runtime::app::StopError>>,
    /// Logging and spans as a service process has them (exported with
    /// `OPSMESH__TELEMETRY__OTLP__ENDPOINT`), so their cost is in the figures.
    pub tracing: opsmesh_runtime::telemetry::Tracing,
    pub _dir: tempfile::TempDir,
}

impl Mesh {
    pub async fn start(args: &[String], extra: &[(&str, String)]) -> Self {
        use opsmesh_tests::hec::HecServer;
        let hec = HecServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secret");
        std::fs::write(&secrets, "bench").unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("OPSMESH__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("OPSMESH__HTTP__ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
            ("OPSMESH__LOG__LEVEL".into(), "warn".into()),
            (
                "OPSMESH__RECEIVER__SOURCES__BENCH__SECRETS_FILE".into(),
                secrets.display().to_string(),
            ),
            // The benchmark measures throughput: its one source is not rate-limited.
            (
                "OPSMESH__RECEIVER__SOURCES__BENCH__RATE_LIMIT_PER_SECOND".into(),
                "0".into(),
            ),
            ("OPSMESH__REPORTER__HEC__URL".into(), hec.url().to_owned()),
            (
                "OPSMESH__REPORTER__HEC__TOKEN".into(),
                HecServer::TOKEN.into(),
            ),
            ("OPSMESH__DIAGNOSER__TELEMETRY_WAIT".into(), "0s".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        if let Some(linger) = arg(args, "--hec-linger") {
            env.push(("OPSMESH__REPORTER__HEC__LINGER".into(), linger));
        }
        // Any setting can be tuned for a run, e.g. OPSMESH__BUS__KAFKA__FETCH_WAIT_MAX=10ms.
        env.extend(std::env::vars().filter(|(k, _)| k.starts_with("OPSMESH__")));
        let memory = match arg(args, "--kafka") {
            Some(brokers) => {
                env.push(("OPSMESH__BUS__KAFKA__BROKERS".into(), brokers));
                false
            }
            None if args.iter().any(|a| a == "--memory") => {
                env.push(("OPSMESH__BUS__KIND".into(), "memory".into()));
                true
            }
            None => usage(),
        };
        let tree = opsmesh_runtime::ConfigTree::load_with_env(None, env).expect("configuration");
        let settings = tree.settings().expect("settings");
        let (bus, label): (Option<Arc<dyn Bus>>, String) = if memory {
            (
                Some(Arc::new(MemoryBus::new(&settings.bus.memory))),
                "in-memory".into(),
            )
        } else {
            (None, "kafka (tansu)".into())
        };
        let linger = tree.contains("reporter.hec.linger");
        let tracing =
            opsmesh_runtime::telemetry::init_service(&settings, "opsmesh").expect("telemetry");
        let app = opsmesh_runtime::launcher::build(&tree, settings, opsmesh::SERVICES, bus)
            .await
            .expect("mesh builds");
        let base = format!("http://{}", app.local_addr());
        let admin = format!("http://{}", app.admin_addr());
        let stop = app.shutdown_token();
        let running = tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::new();
        while client
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let every consumer join before timing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Mesh {
            base,
            hec,
            label,
            linger,
            stop,
            running,
            tracing,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.running.await;
        self.tracing.shutdown().await;
    }

    pub async fn post_alert(&self, client: &reqwest::Client, body: Vec<u8>) -> serde_json::Value {
        let t = (micros_since_epoch() / 1_000_000) as i64;
        let response = client
            .post(format!("{}/v1/alerts/splunk", self.base))
            .header("Content-Type", "application/json")
            .header(
                opsmesh_alert_receiver::SIGNATURE_HEADER,
                opsmesh_alert_receiver::sign("bench", t, &body),
            )
            .body(body)
            .send()
            .await
            .expect("receiver answers");
        response.json().await.expect("a JSON reply")
    }
}
