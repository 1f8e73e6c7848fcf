//! One way to load a secret: a literal value (tests, demos), a file (a mounted Kubernetes
//! Secret, re-read when it changes so rotation needs no restart) or an environment variable.
//! The value is parsed once per change and never printed: `Debug` shows where it comes from,
//! not what it is.
//!
//! A secret is configured either as a table (`signing_key.file = "…"`) or, where a section
//! predates this module, as flat sibling keys (`token`, `token_file`, `token_env`): see
//! [`SecretSource::from_fields`].

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde::Deserialize;

use crate::ConfigError;

/// A secret written into the configuration itself (tests, demos: it lands in config files and
/// process listings); `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct InlineSecret(String);

impl InlineSecret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl From<&str> for InlineSecret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for InlineSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from, as written in configuration: exactly one of `value`, `file`
/// or `env`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The secret itself. Lands in config files and process listings: tests and demos only.
    #[serde(default)]
    pub value: Option<String>,
    /// File holding the secret, re-read when its modification time changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Environment variable holding the secret (read once, at start).
    #[serde(default)]
    pub env: Option<String>,
    /// Configured as flat sibling keys (`<key>`, `<key>_file`, `<key>_env`) rather than as a
    /// table (`<key>.value`, `<key>.file`, `<key>.env`): how errors name them.
    #[serde(skip)]
    flat: bool,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSource")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .field("env", &self.env)
            .finish()
    }
}

impl SecretSource {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            file: Some(path.into()),
            ..Self::default()
        }
    }

    pub fn value(value: impl Into<String>) -> Self {
        Self {
            value: Some(value.into()),
            ..Self::default()
        }
    }

    /// A secret configured as flat sibling keys of a section: `<key>` (inline), `<key>_file`
    /// and `<key>_env`, e.g. `remediator.argocd.token` and `remediator.argocd.token_file`.
    /// Errors of [`Secret::load`] then name those keys. A section without one of the three
    /// passes `None` for it.
    pub fn from_fields(
        value: Option<&InlineSecret>,
        file: Option<&Path>,
        env: Option<&str>,
    ) -> Self {
        Self {
            value: value.map(|v| v.0.clone()),
            file: file.map(Path::to_owned),
            env: env.map(str::to_owned),
            flat: true,
        }
    }

    pub fn is_set(&self) -> bool {
        self.given() > 0
    }

    /// How many of the sources are set (more than one is a configuration error).
    pub fn given(&self) -> usize {
        [
            self.value.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    /// The configuration key of one source of the secret configured at `key`.
    fn key_of(&self, key: &str, field: Field) -> String {
        match (self.flat, field) {
            (false, Field::Value) => format!("{key}.value"),
            (false, Field::File) => format!("{key}.file"),
            (false, Field::Env) => format!("{key}.env"),
            (true, Field::Value) => key.to_owned(),
            (true, Field::File) => format!("{key}_file"),
            (true, Field::Env) => format!("{key}_env"),
        }
    }

    fn missing(&self) -> &'static str {
        if self.flat {
            // The section knows which of `<key>_file` / `<key>_env` it has.
            "required"
        } else {
            "required: set `file`, `env` or `value`"
        }
    }

    /// Why more than one source is an error, naming the sources as configured.
    fn conflict(&self, key: &str) -> String {
        if !self.flat {
            return "set exactly one of `value`, `file` and `env`".into();
        }
        let name = key.rsplit('.').next().unwrap_or(key);
        let given: Vec<String> = [
            (self.value.is_some(), Field::Value),
            (self.file.is_some(), Field::File),
            (self.env.is_some(), Field::Env),
        ]
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, field)| format!("`{}`", self.key_of(name, field)))
        .collect();
        format!("set only one of {}", given.join(", "))
    }
}

/// The three places a secret can come from.
#[derive(Debug, Clone, Copy)]
enum Field {
    Value,
    File,
    Env,
}

/// The usual parser of a token or password kept as text: surrounding whitespace (a file's
/// final newline) is not part of it, and an empty one is refused.
pub fn trimmed(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    Ok(text.to_owned())
}

/// How often, at most, a secret file's modification time is looked at, unless
/// [`Secret::recheck_every`] says otherwise.
const RECHECK: Duration = Duration::from_secs(1);

/// A loaded secret, parsed into `T`; [`Secret::get`] returns the current value.
pub struct Secret<T> {
    key: String,
    origin: Origin,
    parse: fn(&str) -> Result<T, String>,
    recheck: Duration,
    cache: Mutex<Cached<T>>,
}

#[derive(Debug)]
enum Origin {
    Value,
    Env,
    File(PathBuf),
}

struct Cached<T> {
    value: Arc<T>,
    stamp: Stamp,
    checked: Instant,
}

/// A file's modification time and length: a rewrite within the file system's timestamp
/// granularity still changes the length in practice.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("key", &self.key)
            .field("origin", &self.origin)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl<T> Secret<T> {
    /// Loads and parses the secret configured at `key` (named in errors, e.g.
    /// `reporter.approvals.signing_key`). `None` when `source` names nothing.
    pub fn load(
        key: &str,
        source: &SecretSource,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<Self>, ConfigError> {
        match source.given() {
            0 => return Ok(None),
            1 => {}
            _ => return Err(ConfigError::invalid(key, source.conflict(key))),
        }
        let (origin, text, stamp) = if let Some(value) = &source.value {
            (Origin::Value, value.clone(), None)
        } else if let Some(var) = &source.env {
            let text = std::env::var(var).map_err(|_| {
                ConfigError::invalid(
                    source.key_of(key, Field::Env),
                    format!("environment variable {var} is not set"),
                )
            })?;
            (Origin::Env, text, None)
        } else {
            let path = source.file.clone().expect("one source is set");
            let (text, stamp) = read(&path).map_err(|e| {
                ConfigError::invalid(source.key_of(key, Field::File), e.to_string())
            })?;
            (Origin::File(path), text, stamp)
        };
        let field = match origin {
            Origin::Value => Field::Value,
            Origin::Env => Field::Env,
            Origin::File(_) => Field::File,
        };
        let value = parse(&text)
            .map_err(|problem| ConfigError::invalid(source.key_of(key, field), problem))?;
        Ok(Some(Self {
            key: key.to_owned(),
            origin,
            parse,
            recheck: RECHECK,
            cache: Mutex::new(Cached {
                value: Arc::new(value),
                stamp,
                checked: Instant::now(),
            }),
        }))
    }

    /// A secret held in memory only (generated at start, or in tests).
    pub fn fixed(key: &str, value: T, parse: fn(&str) -> Result<T, String>) -> Self {
        Self {
            key: key.to_owned(),
            origin: Origin::Value,
            parse,
            recheck: RECHECK,
            cache: Mutex::new(Cached {
                value: Arc::new(value),
                stamp: None,
                checked: Instant::now(),
            }),
        }
    }

    /// Like [`Secret::load`], but the secret is required.
    pub fn require(
        key: &str,
        source: &SecretSource,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Self, ConfigError> {
        Self::load(key, source, parse)?.ok_or_else(|| ConfigError::invalid(key, source.missing()))
    }

    /// Looks at the file's modification time at most once per `interval` instead of once a
    /// second (zero: on every [`Secret::get`]), for services that make it configurable.
    pub fn recheck_every(mut self, interval: Duration) -> Self {
        self.recheck = interval;
        self
    }

    /// The current value. A file is re-read when its modification time or length changed; a file that
    /// has become unreadable or unparsable keeps the previous value (and says so in the log),
    /// so a half-written rotation never takes a service down.
    pub fn get(&self) -> Arc<T> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Origin::File(path) = &self.origin
            && cache.checked.elapsed() >= self.recheck
        {
            cache.checked = Instant::now();
            let now = stamp(path);
            if now != cache.stamp {
                match read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|(text, stamp)| (self.parse)(&text).map(|value| (value, stamp)))
                {
                    Ok((value, stamp)) => {
                        cache.value = Arc::new(value);
                        cache.stamp = stamp;
                        tracing::info!(key = %self.key, path = %path.display(), "secret re-read");
                    }
                    Err(problem) => {
                        // Retried at the next check only if the file changes again.
                        cache.stamp = now;
                        tracing::warn!(key = %self.key, path = %path.display(), %problem, "cannot re-read secret; keeping the previous value");
                    }
                }
            }
        }
        Arc::clone(&cache.value)
    }
}

fn read(path: &Path) -> std::io::Result<(String, Stamp)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok((text, stamp(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_is_none_and_require_names_the_key() {
        let none = Secret::load("a.key", &SecretSource::default(), trimmed).unwrap();
        assert!(none.is_none());
        let err = Secret::require("a.key", &SecretSource::default(), trimmed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a.key`"), "{err}");
    }

    #[test]
    fn two_sources_are_an_error() {
        let source = SecretSource {
            value: Some("x".into()),
            env: Some("HOME".into()),
            ..SecretSource::default()
        };
        let err = Secret::load("a.key", &source, trimmed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let err = Secret::load("a.key", &SecretSource::value("  "), trimmed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a.key.value`: is empty"), "{err}");
        let err = Secret::load(
            "a.key",
            &SecretSource::file("/nonexistent/opsmesh-secret"),
            trimmed,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`a.key.file`"), "{err}");
        let source = SecretSource {
            env: Some("OPSMESH_TEST_SURELY_UNSET_VARIABLE".into()),
            ..SecretSource::default()
        };
        let err = Secret::load("a.key", &source, trimmed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a.key.env`"), "{err}");
    }

    #[test]
    fn flat_sibling_keys_are_named_as_configured() {
        let inline = InlineSecret::new("t");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let both = SecretSource::from_fields(Some(&inline), Some(&missing), None);
        let err = Secret::load("remediator.argocd.token", &both, trimmed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`remediator.argocd.token`: set only one of `token`, `token_file`"),
            "{err}"
        );
        let file = SecretSource::from_fields(None, Some(&missing), None);
        let err = Secret::load("remediator.argocd.token", &file, trimmed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`remediator.argocd.token_file`: "), "{err}");
        assert!(err.contains("missing"), "{err}");
        let env = SecretSource::from_fields(None, None, Some("OPSMESH_TEST_SURELY_UNSET_VARIABLE"));
        let err = Secret::load("bus.kafka.security.sasl.password", &env, trimmed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`bus.kafka.security.sasl.password_env`: environment variable"),
            "{err}"
        );
        let empty = InlineSecret::new(" \n");
        let err = Secret::load(
            "reporter.hec.token",
            &SecretSource::from_fields(Some(&empty), None, None),
            trimmed,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`reporter.hec.token`: is empty"), "{err}");
        assert!(
            Secret::load(
                "a.token",
                &SecretSource::from_fields(None, None, None),
                trimmed
            )
            .unwrap()
            .is_none()
        );
        assert_eq!(format!("{inline:?}"), "<redacted>");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let source = SecretSource::value("hunter2");
        let secret = Secret::require("a.key", &source, trimmed).unwrap();
        assert!(!format!("{source:?}").contains("hunter2"));
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(*secret.get(), "hunter2");
    }

    #[test]
    fn a_rotated_file_is_re_read_and_a_broken_one_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "first\n").unwrap();
        let secret = Secret::require("a.key", &SecretSource::file(&path), trimmed).unwrap();
        assert_eq!(*secret.get(), "first");

        let rewrite = |text: &str, age: u64| {
            std::fs::write(&path, text).unwrap();
            // A distinct modification time, whatever the file system's resolution.
            let when = SystemTime::now() + Duration::from_secs(age);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
            secret.cache.lock().unwrap().checked = Instant::now() - RECHECK;
        };
        rewrite("second\n", 10);
        assert_eq!(*secret.get(), "second");
        rewrite("   ", 20);
        assert_eq!(*secret.get(), "second", "an unparsable rotation is ignored");
    }

    #[test]
    fn the_file_is_not_looked_at_again_within_the_recheck_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "first\n").unwrap();
        let secret = Secret::require("a.key", &SecretSource::file(&path), trimmed)
            .unwrap()
            .recheck_every(Duration::from_secs(3600));
        std::fs::write(&path, "second\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(10))
            .unwrap();
        assert_eq!(*secret.get(), "first");
        let secret = secret.recheck_every(Duration::ZERO);
        assert_eq!(*secret.get(), "second");
    }
}
