//! opsmesh binaries as OS processes, with their logs kept for failure reports.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

pub struct Service {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    pub http_port: u16,
    /// `/healthz`, `/readyz` and `/metrics` (`http.admin_listen`).
    pub admin_port: u16,
}

impl Service {
    /// Prepares `program args…` with `OPSMESH__*` settings; `start` launches it.
    pub fn new(
        name: &str,
        program: PathBuf,
        args: &[&str],
        env: &[(&str, String)],
        logs: &std::path::Path,
    ) -> Self {
        let http_port = crate::free_port();
        let admin_port = crate::free_port();
        let mut all_env: Vec<(String, String)> = vec![
            (
                "OPSMESH__HTTP__LISTEN".into(),
                format!("127.0.0.1:{http_port}"),
            ),
            (
                "OPSMESH__HTTP__ADMIN_LISTEN".into(),
                format!("127.0.0.1:{admin_port}"),
            ),
            ("OPSMESH__LOG__FORMAT".into(), "json".into()),
            ("OPSMESH__LOG__LEVEL".into(), "info".into()),
        ];
        all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Self {
            name: name.into(),
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: all_env,
            child: None,
            log: logs.join(format!("{name}.log")),
            http_port,
            admin_port,
        }
    }

    pub fn start(&mut self) -> &mut Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program.display()));
        self.child = Some(child);
        self
    }

    /// The service's own endpoints (`http.listen`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Health and metrics (`http.admin_listen`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(self.admin_url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status} before ready:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} not ready within 60s:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            kill(Pid::from_raw(child.id() as i32), signal).expect("signal delivered");
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A Prometheus sample's value from `/metrics` (sum over series matching all `labels`).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .and_then(|r| r.error_for_status())
            .expect("metrics answered")
            .text()
            .await
            .unwrap_or_default();
        crate::process::sum_metric(&text, name, labels)
    }
}

/// Sums the samples of `name` whose label set contains every `labels` pair.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log_text());
        }
        self.kill();
    }
}
