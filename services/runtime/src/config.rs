//! Layered configuration: built-in defaults → optional TOML file → `OPSMESH__SECTION__KEY`
//! environment variables. Unknown keys and bad values are errors that name the key.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, de::DeserializeOwned};

use crate::bus::BusSettings;

/// Prefix of configuration environment variables; `__` separates path segments.
pub const ENV_PREFIX: &str = "OPSMESH";
pub const ENV_SEPARATOR: &str = "__";

/// Top-level tables owned by a service, each read by that service alone. Listed here so a
/// shared file can configure every service while a typo'd section is still an error.
pub const SERVICE_SECTIONS: &[&str] = &[
    "collector",
    "receiver",
    "diagnoser",
    "remediator",
    "reporter",
    "sim",
    "demo",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid configuration: `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Checks a deserialised section beyond what its types say; errors name the key.
pub trait Validate {
    /// `prefix` is the section's key path (e.g. `receiver`), for error messages.
    fn validate(&self, prefix: &str) -> Result<(), ConfigError>;
}

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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cluster: "default".into(),
            http: HttpSettings::default(),
            log: LogSettings::default(),
            shutdown: ShutdownSettings::default(),
            bus: BusSettings::default(),
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
        self.bus.validate("bus")
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

/// The merged, not yet typed, configuration tree.
#[derive(Debug, Clone)]
pub struct ConfigTree {
    sections: HashMap<String, config::Value>,
}

impl ConfigTree {
    /// Reads the optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`ConfigTree::load`], with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_layered(None, file, env)
    }

    /// Defaults of a mode (TOML, e.g. `opsmesh up` selects the in-memory bus) under the file
    /// and the environment.
    pub fn load_layered(
        mode_defaults: Option<&str>,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(defaults) = mode_defaults {
            builder =
                builder.add_source(config::File::from_str(defaults, config::FileFormat::Toml));
        }
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    message: "no such file".into(),
                });
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .source(Some(env)),
        );
        let merged = builder.build().map_err(|e| match file {
            Some(path) => ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            },
            None => ConfigError::invalid("<environment>", e.to_string()),
        })?;
        let sections: HashMap<String, config::Value> = merged
            .try_deserialize()
            .map_err(|e| ConfigError::invalid("<root>", e.to_string()))?;
        let tree = Self { sections };
        tree.check_top_level()?;
        Ok(tree)
    }

    fn check_top_level(&self) -> Result<(), ConfigError> {
        const SHARED: &[&str] = &["cluster", "http", "log", "shutdown", "bus"];
        for key in self.sections.keys() {
            if !SHARED.contains(&key.as_str()) && !SERVICE_SECTIONS.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "unknown key; expected one of {}",
                        [SHARED, SERVICE_SECTIONS].concat().join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether `path` (dotted, e.g. `reporter.hec.url`) is set by any layer.
    pub fn contains(&self, path: &str) -> bool {
        let mut segments = path.split('.');
        let Some(first) = segments.next() else {
            return false;
        };
        let mut current = self.sections.get(first).cloned();
        for segment in segments {
            current = current
                .and_then(|value| value.into_table().ok())
                .and_then(|mut table| table.remove(segment));
        }
        current.is_some()
    }

    /// The shared settings, validated.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let shared: BTreeMap<String, config::Value> = self
            .sections
            .iter()
            .filter(|(k, _)| !SERVICE_SECTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let table =
            config::Value::new(None, config::ValueKind::Table(shared.into_iter().collect()));
        let settings: Settings = deserialize_at(table, "")?;
        settings.validate("")?;
        Ok(settings)
    }

    /// A service's own section (defaults when absent), validated.
    pub fn section<T: DeserializeOwned + Default + Validate>(
        &self,
        name: &str,
    ) -> Result<T, ConfigError> {
        let value = match self.sections.get(name) {
            Some(value) => deserialize_at(value.clone(), name)?,
            None => T::default(),
        };
        value.validate(name)?;
        Ok(value)
    }
}

fn deserialize_at<T: DeserializeOwned>(
    value: config::Value,
    prefix: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let key = match (prefix.is_empty(), path == ".") {
            (true, _) => path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{path}"),
        };
        ConfigError::invalid(key, err.into_inner().to_string())
    })
}

/// A list of names in the configuration file, or one comma-separated string (how
/// `OPSMESH__…` environment variables carry lists): `["a", "b"]` and `"a, b"` are the same.
/// For `#[serde(deserialize_with = "…")]`.
pub fn name_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Joined(String),
    }
    Ok(match Names::deserialize(d)? {
        Names::List(list) => list,
        Names::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
    fn unknown_top_level_key_is_named() {
        let err =
            ConfigTree::load_with_env(None, env(&[("OPSMESH__RECEVIER__X", "1")])).unwrap_err();
        assert!(err.to_string().contains("`recevier`"), "{err}");
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

    #[test]
    fn missing_file_is_an_error() {
        let err = ConfigTree::load_with_env(Some(Path::new("/nonexistent/opsmesh.toml")), env(&[]))
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/opsmesh.toml"),
            "{err}"
        );
    }
}
