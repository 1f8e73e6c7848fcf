//! Named bearer tokens for the console and the MCP server, read from a secret file (re-read
//! when it changes, so rotation and removal need no restart) and/or an environment variable —
//! never from the configuration file.
//!
//! Format: one `name:token` or `name:token:role` per line (file) or comma-separated
//! (environment); `#` starts a comment line. The name is the identity recorded as the
//! approver; the role is `viewer` (the default: read only) or `approver` (may approve and
//! reject, and queue investigations). Tokens cannot contain `:`.

use std::{fmt, path::Path, time::Duration};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use opsmesh_runtime::{
    ConfigError,
    secret::{Secret, SecretSource},
};

/// What the holder of a token (or a proxy-authenticated user) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Reads incidents, approvals and the audit chain; decides nothing.
    #[default]
    Viewer,
    /// Also approves and rejects pending actions.
    Approver,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Approver => "approver",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Self::Viewer),
            "approver" => Some(Self::Approver),
            _ => None,
        }
    }

    /// Whether this role may approve or reject a pending action.
    pub fn may_decide(self) -> bool {
        self == Self::Approver
    }

    /// Whether this role may queue an investigation. An investigation spends money (model
    /// tokens) and runs Splunk searches and cluster reads on the caller's behalf, and roles
    /// are fixed per token line (no permission sets to grant it separately), so it takes the
    /// role already trusted with consequential actions: approver. Viewers read reports.
    pub fn may_investigate(self) -> bool {
        self == Self::Approver
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub role: Role,
}

/// SHA-256 of a token: what a console session remembers of the credential it was opened
/// with, so that the session ends when that token leaves the file (or is rotated).
pub type Credential = [u8; 32];

pub fn credential_of(token: &str) -> Credential {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    holder: Holder,
    token: String,
    credential: Credential,
}

/// A set of named tokens.
pub struct TokenSet {
    from_file: Option<Secret<Vec<Entry>>>,
    from_env: Option<Secret<Vec<Entry>>>,
}

impl TokenSet {
    /// Loads `file` and the variable `env` (either may be unset; both are active when both
    /// are set); `key` names the configuration keys in errors (`<key>_file`, `<key>_env`).
    /// The file is looked at on every use, so a removed token stops working at once.
    pub fn load(file: Option<&Path>, env: Option<&str>, key: &str) -> Result<Self, ConfigError> {
        let from_file = Secret::load(key, &SecretSource::from_fields(None, file, None), parse)?
            .map(|secret| secret.recheck_every(Duration::ZERO));
        let from_env = Secret::load(
            key,
            &SecretSource::from_fields(None, None, env),
            parse_comma_separated,
        )?;
        let set = Self {
            from_file,
            from_env,
        };
        if set.entries().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}_file"),
                "no tokens found (expected `name:token[:role]` lines)",
            ));
        }
        Ok(set)
    }

    /// As [`TokenSet::load`], or `None` when neither `file` nor `env` is configured.
    pub fn load_configured(
        file: Option<&Path>,
        env: Option<&str>,
        key: &str,
    ) -> Result<Option<Self>, ConfigError> {
        if file.is_none() && env.is_none() {
            return Ok(None);
        }
        Self::load(file, env, key).map(Some)
    }

    /// The current entries (a file emptied later revokes every token it held).
    fn entries(&self) -> Vec<Entry> {
        [&self.from_file, &self.from_env]
            .into_iter()
            .flatten()
            .flat_map(|secret| secret.get().as_ref().clone())
            .collect()
    }

    /// The holder of `token`, compared in constant time against every entry.
    pub fn identify(&self, token: &str) -> Option<Holder> {
        self.find(|entry| entry.token.as_bytes().ct_eq(token.as_bytes()).into())
    }

    /// The current holder named `name` of the token whose [`Credential`] is `credential`:
    /// `None` once that token left the set (removed, or rotated).
    pub fn holder_of(&self, name: &str, credential: &Credential) -> Option<Holder> {
        self.find(|entry| {
            let same: bool = entry.credential.ct_eq(credential).into();
            same && entry.holder.name == name
        })
    }

    /// The first entry `matches` accepts, after asking it of every entry (no early exit, so
    /// the time taken does not tell which entry matched).
    fn find(&self, matches: impl Fn(&Entry) -> bool) -> Option<Holder> {
        let mut found = None;
        for entry in self.entries() {
            if matches(&entry) && found.is_none() {
                found = Some(entry.holder);
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

/// An environment variable: entries separated by commas.
fn parse_comma_separated(text: &str) -> Result<Vec<Entry>, String> {
    parse(&text.replace(',', "\n"))
}

fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').map(str::trim).collect();
        let (name, token, role) = match fields.as_slice() {
            [name, token] => (*name, *token, Role::default()),
            [name, token, role] => {
                let role = Role::parse(role).ok_or_else(|| {
                    format!(
                        "line {}: unknown role {role:?} (expected viewer or approver)",
                        n + 1
                    )
                })?;
                (*name, *token, role)
            }
            _ => {
                return Err(format!(
                    "line {}: expected `name:token` or `name:token:role` (tokens cannot contain ':')",
                    n + 1
                ));
            }
        };
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
            holder: Holder {
                name: name.to_owned(),
                role,
            },
            token: token.to_owned(),
            credential: credential_of(token),
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

    use std::time::SystemTime;

    #[test]
    fn file_tokens_identify_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# operators\nalice:aaaaaaaaaaaaaaaaaaaa\n").unwrap();
        let set = TokenSet::load(Some(path.as_path()), None, "reporter.console.users").unwrap();
        let name = |token: &str| set.identify(token).map(|h| h.name);
        assert_eq!(name("aaaaaaaaaaaaaaaaaaaa").as_deref(), Some("alice"));
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
        assert_eq!(name("bbbbbbbbbbbbbbbbbbbb").as_deref(), Some("bob"));
        assert_eq!(set.identify("aaaaaaaaaaaaaaaaaaaa"), None);
    }

    #[test]
    fn roles_default_to_viewer_and_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "alice:aaaaaaaaaaaaaaaaaaaa:approver\nvictor:vvvvvvvvvvvvvvvvvvvv\nwalt:wwwwwwwwwwwwwwwwwwww:viewer\n",
        )
        .unwrap();
        let set = TokenSet::load(Some(path.as_path()), None, "reporter.mcp.tokens").unwrap();
        let role = |token: &str| set.identify(token).map(|h| h.role);
        assert_eq!(role("aaaaaaaaaaaaaaaaaaaa"), Some(Role::Approver));
        assert_eq!(role("vvvvvvvvvvvvvvvvvvvv"), Some(Role::Viewer));
        assert_eq!(role("wwwwwwwwwwwwwwwwwwww"), Some(Role::Viewer));
        let alice = credential_of("aaaaaaaaaaaaaaaaaaaa");
        assert_eq!(
            set.holder_of("alice", &alice).map(|h| h.role),
            Some(Role::Approver)
        );
        assert_eq!(
            set.holder_of("victor", &alice),
            None,
            "name and token go together"
        );
        // Demoted in place: the session's holder follows the file.
        std::fs::write(&path, "alice:aaaaaaaaaaaaaaaaaaaa\n").unwrap();
        assert_eq!(
            set.holder_of("alice", &alice).map(|h| h.role),
            Some(Role::Viewer)
        );
    }

    #[test]
    fn bad_roles_and_extra_fields_are_refused() {
        for (line, problem) in [
            ("alice:aaaaaaaaaaaaaaaaaaaa:admin", "unknown role \"admin\""),
            (
                "alice:aaaa:aaaaaaaaaaaaaaaa:approver",
                "tokens cannot contain ':'",
            ),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(problem), "{line}: {err}");
        }
    }

    #[test]
    fn bad_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "alice:short\n").unwrap();
        let err = TokenSet::load(Some(path.as_path()), None, "reporter.mcp.tokens")
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
