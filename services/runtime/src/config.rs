//! Layered configuration: built-in defaults → optional TOML file → `OPSMESH__SECTION__KEY`
//! environment variables. Unknown keys and bad values are errors that name the key.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::DeserializeOwned};

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
        const SHARED: &[&str] = &["cluster", "http", "log", "shutdown", "bus", "telemetry"];
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

    /// The top-level tables no service owns, as `T` (not yet validated).
    pub(crate) fn shared<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let shared: BTreeMap<String, config::Value> = self
            .sections
            .iter()
            .filter(|(k, _)| !SERVICE_SECTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let table =
            config::Value::new(None, config::ValueKind::Table(shared.into_iter().collect()));
        deserialize_at(table, "")
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
pub(crate) mod tests {
    use super::*;

    /// `pairs` as the environment [`ConfigTree::load_with_env`] takes.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err =
            ConfigTree::load_with_env(None, env(&[("OPSMESH__RECEVIER__X", "1")])).unwrap_err();
        assert!(err.to_string().contains("`recevier`"), "{err}");
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
