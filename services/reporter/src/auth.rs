//! Named bearer tokens for the console and the MCP server, read from a secret file (re-read
//! when it changes, so rotation needs no restart) and/or an environment variable — never from
//! the configuration file.
//!
//! Format: one `name:token` per line (file) or comma-separated (environment); `#` starts a
//! comment line. The name is the identity recorded as the approver.

use std::{path::PathBuf, sync::Mutex, time::SystemTime};

use subtle::ConstantTimeEq;

use opsmesh_runtime::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    token: String,
}

/// A set of named tokens.
pub struct TokenSet {
    file: Option<PathBuf>,
    env_entries: Vec<Entry>,
    cache: Mutex<(Option<SystemTime>, Vec<Entry>)>,
}

impl TokenSet {
    /// Loads `file` and the variable `env` (either may be unset); `key` names the
    /// configuration keys in errors.
    pub fn load(file: Option<&PathBuf>, env: Option<&str>, key: &str) -> Result<Self, ConfigError> {
        let env_entries = match env {
            Some(var) => {
                let value = std::env::var(var).map_err(|_| {
                    ConfigError::invalid(
                        format!("{key}_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?;
                parse(&value.replace(',', "\n"))
                    .map_err(|p| ConfigError::invalid(format!("{key}_env"), p))?
            }
            None => Vec::new(),
        };
        let set = Self {
            file: file.cloned(),
            env_entries,
            cache: Mutex::new((None, Vec::new())),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(format!("{key}_file"), format!("{}: {e}", path.display()))
            })?;
            let entries = parse(&text).map_err(|p| {
                ConfigError::invalid(format!("{key}_file"), format!("{}: {p}", path.display()))
            })?;
            *set.cache.lock().unwrap_or_else(|p| p.into_inner()) = (modified(path), entries);
        }
        if set.entries().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}_file"),
                "no tokens found (expected `name:token` lines)",
            ));
        }
        Ok(set)
    }

    /// A set from literal `(name, token)` pairs (tests, `opsmesh mcp`).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            file: None,
            env_entries: pairs
                .iter()
                .map(|(n, t)| Entry {
                    name: (*n).to_owned(),
                    token: (*t).to_owned(),
                })
                .collect(),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    fn entries(&self) -> Vec<Entry> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.file {
            let now = modified(path);
            if now != cache.0 {
                match std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| parse(&t))
                {
                    Ok(entries) => *cache = (now, entries),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "cannot re-read tokens; keeping the previous ones");
                    }
                }
            }
        }
        let mut all = cache.1.clone();
        all.extend(self.env_entries.iter().cloned());
        all
    }

    /// The name of the holder of `token`, compared in constant time against every entry.
    pub fn identify(&self, token: &str) -> Option<String> {
        let mut found = None;
        for entry in self.entries() {
            let equal: bool = entry.token.as_bytes().ct_eq(token.as_bytes()).into();
            if equal && found.is_none() {
                found = Some(entry.name);
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected `name:token`", n + 1))?;
        let (name, token) = (name.trim(), token.trim());
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
            return Err(format!("line {}: invalid name", n + 1));
        }
        if token.len() < 16 {
            return Err(format!(
                "line {}: token for {name:?} is shorter than 16 characters",
                n + 1
            ));
        }
        entries.push(Entry {
            name: name.to_owned(),
            token: token.to_owned(),
        });
    }
    Ok(entries)
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_tokens_identify_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# operators\nalice:aaaaaaaaaaaaaaaaaaaa\n").unwrap();
        let set = TokenSet::load(Some(&path), None, "reporter.console.users").unwrap();
        assert_eq!(
            set.identify("aaaaaaaaaaaaaaaaaaaa").as_deref(),
            Some("alice")
        );
        assert_eq!(set.identify("bbbbbbbbbbbbbbbbbbbb"), None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "bob:bbbbbbbbbbbbbbbbbbbb\n").unwrap();
        // mtime granularity: force a different mtime.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(set.identify("bbbbbbbbbbbbbbbbbbbb").as_deref(), Some("bob"));
        assert_eq!(set.identify("aaaaaaaaaaaaaaaaaaaa"), None);
    }

    #[test]
    fn bad_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "alice:short\n").unwrap();
        let err = TokenSet::load(Some(&path), None, "reporter.mcp.tokens")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`reporter.mcp.tokens_file`"), "{err}");
        assert!(err.contains("shorter than 16"), "{err}");
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
