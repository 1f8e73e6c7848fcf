//! The settings every service shares (`cluster`, `http`, `log`, `shutdown`, `bus`,
//! `telemetry`): the top-level tables of the configuration that no service owns.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use crate::{
    bus::BusSettings,
    config::{ConfigError, ConfigTree, Validate},
    telemetry::TelemetrySettings,
};

/// Settings every service shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Name of the Kubernetes cluster this deployment serves (stamped on every message).
    pub cluster: String,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub shutdown: ShutdownSettings,
    pub bus: BusSettings,
    /// Span export (`telemetry.otlp`).
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cluster: "default".into(),
            http: HttpSettings::default(),
            log: LogSettings::default(),
            shutdown: ShutdownSettings::default(),
            bus: BusSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}

impl Validate for Settings {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::invalid("cluster", "must not be empty"));
        }
        self.http.validate("http")?;
        if self.shutdown.grace.is_zero() {
            return Err(ConfigError::invalid(
                "shutdown.grace",
                "must be longer than 0s",
            ));
        }
        self.bus.validate("bus")?;
        self.telemetry.validate("telemetry")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address of the service's own HTTP API (the receiver's alert door, the reporter's
    /// console and MCP). Port 0 picks one.
    pub listen: SocketAddr,
    /// Address of `/healthz`, `/readyz` and `/metrics`, kept off the public listener so
    /// whoever reaches the alert door cannot read metrics or probe readiness. Port 0 picks one.
    pub admin_listen: SocketAddr,
    pub workers: usize,
    /// Maximum request body size in bytes, for every endpoint unless a service sets lower.
    pub max_body_bytes: usize,
    /// A request's line and headers must arrive within this, or it is answered `408` and
    /// the connection closed: a client dribbling headers cannot hold a connection open.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this after its headers; reading it fails then
    /// (`408` where the service says so), so a client dribbling a body cannot hold a worker's
    /// buffer open.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// An idle keep-alive connection is closed after this; `0s` closes after every response.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// After the server decides to close, the client gets this long to hang up cleanly.
    #[serde(with = "humantime_serde")]
    pub disconnect_timeout: Duration,
    /// Connections held at once per worker; further ones wait in the accept queue.
    pub max_connections_per_worker: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            workers: 2,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(5),
            disconnect_timeout: Duration::from_secs(1),
            max_connections_per_worker: 10_000,
        }
    }
}

impl Validate for HttpSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive = [
            ("workers", self.workers as u128),
            ("header_timeout", self.header_timeout.as_millis()),
            ("body_timeout", self.body_timeout.as_millis()),
            ("disconnect_timeout", self.disconnect_timeout.as_millis()),
            (
                "max_connections_per_worker",
                self.max_connections_per_worker as u128,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("{prefix}.{key}"),
                    "must be at least 1 (timeouts: 1ms)",
                ));
            }
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.admin_listen"),
                format!(
                    "must differ from {prefix}.listen ({}): health and metrics stay off the public listener",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,opsmesh_runtime=debug`. `RUST_LOG` overrides.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// How long in-flight work may take to drain after SIGTERM before the process gives up.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(20),
        }
    }
}

// Here rather than in `config`, so the configuration layer knows nothing of what the shared
// tables hold (the bus settings among them).
impl ConfigTree {
    /// The shared settings, validated.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let settings: Settings = self.shared()?;
        settings.validate("")?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn defaults_need_no_file() {
        let tree =
            ConfigTree::load_with_env(None, env(&[("OPSMESH__BUS__KIND", "memory")])).unwrap();
        let settings = tree.settings().unwrap();
        assert_eq!(settings.http.listen.port(), 8080);
        assert_eq!(settings.shutdown.grace, Duration::from_secs(20));
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsmesh.toml");
        std::fs::write(
            &path,
            "cluster = \"from-file\"\n[http]\nlisten = \"127.0.0.1:9000\"\n[bus]\nkind = \"memory\"\n",
        )
        .unwrap();
        let tree = ConfigTree::load_with_env(
            Some(&path),
            env(&[("OPSMESH__HTTP__LISTEN", "127.0.0.1:9100")]),
        )
        .unwrap();
        let settings = tree.settings().unwrap();
        assert_eq!(settings.cluster, "from-file");
        assert_eq!(settings.http.listen.port(), 9100);
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let err = ConfigTree::load_with_env(None, env(&[("OPSMESH__BUS__KAFKA__BROKERZ", "x")]))
            .unwrap()
            .settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("bus.kafka"), "{err}");
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn bad_number_is_named() {
        let err = ConfigTree::load_with_env(None, env(&[("OPSMESH__HTTP__WORKERS", "many")]))
            .unwrap()
            .settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`http.workers`"), "{err}");
    }

    #[test]
    fn http_limits_are_checked_and_named() {
        let settings = |pairs: &[(&str, &str)]| {
            ConfigTree::load_with_env(None, env(pairs))
                .unwrap()
                .settings()
                .map_err(|e| e.to_string())
        };
        let defaults = settings(&[("OPSMESH__BUS__KIND", "memory")]).unwrap();
        assert_eq!(defaults.http.admin_listen.port(), 9090);
        assert_eq!(defaults.http.header_timeout, Duration::from_secs(5));
        let err = settings(&[
            ("OPSMESH__BUS__KIND", "memory"),
            ("OPSMESH__HTTP__BODY_TIMEOUT", "0s"),
        ])
        .unwrap_err();
        assert!(err.contains("`http.body_timeout`"), "{err}");
        let err = settings(&[
            ("OPSMESH__BUS__KIND", "memory"),
            ("OPSMESH__HTTP__LISTEN", "0.0.0.0:8080"),
            ("OPSMESH__HTTP__ADMIN_LISTEN", "0.0.0.0:8080"),
        ])
        .unwrap_err();
        assert!(err.contains("`http.admin_listen`"), "{err}");
    }

    #[test]
    fn kafka_without_brokers_is_named() {
        let err = ConfigTree::load_with_env(None, env(&[("OPSMESH__BUS__KIND", "kafka")]))
            .unwrap()
            .settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`bus.kafka.brokers`"), "{err}");
    }
}
