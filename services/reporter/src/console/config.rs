use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use opsmesh_runtime::{ConfigError, Validate};

/// `[reporter.console]`: the operator console (`/console`) and the incident API (`/api`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve `/console` and `/api`. Needs at least one way to authenticate.
    pub enabled: bool,
    /// Operators: `name:token[:role]` lines (a mounted Secret; re-read when it changes, and
    /// every session is checked against it on every request). The name is the identity
    /// recorded on approvals; the role is `viewer` (default, read only) or `approver`.
    pub users_file: Option<PathBuf>,
    /// Environment variable holding `name:token[:role],name:token[:role]`.
    pub users_env: Option<String>,
    /// One-time sign-in links: `name:token[:role]` lines; `GET /console/login?token=<token>`
    /// opens a session for `name` once, then that token signs nobody in again (its session
    /// lasts while the line stays in the file). `opsmesh demo` writes one and prints the link.
    pub signin_link_file: Option<PathBuf>,
    /// Header an authenticating proxy sets to the signed-in user (e.g. `X-Forwarded-User`,
    /// `X-Auth-Request-Email`). Needs `trusted_proxies`.
    pub trusted_user_header: Option<String>,
    /// Peers allowed to set `trusted_user_header` (the proxy's addresses, e.g. `127.0.0.1`
    /// for a sidecar); required with it, since any other peer could claim any user.
    pub trusted_proxies: Vec<IpAddr>,
    /// Users signed in by the proxy who may approve and reject; the others are viewers.
    pub proxy_approvers: Vec<String>,
    /// Console sessions open at once on a replica; beyond it the oldest is ended (counted in
    /// `reporter_console_sessions_evicted_total`).
    pub max_sessions: usize,
    /// Bad tokens a peer may try at `/console/login` within `login_failure_window` before its
    /// sign-ins are refused (429) until the window has passed.
    pub login_failures_per_peer: u32,
    #[serde(with = "humantime_serde")]
    pub login_failure_window: Duration,
    /// Peers with failed sign-ins tracked at once; beyond it the oldest is forgotten (counted
    /// in `reporter_console_login_peers_evicted_total`).
    pub max_login_peers: usize,
    /// Lifetime of a console session after signing in with a token. Sessions live in the
    /// memory of the replica that opened them (route a browser to one replica).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// 32+ bytes signing session and CSRF tokens. Set it (the same file on every replica)
    /// when several replicas serve the console behind a proxy; unset: random per process.
    pub session_key_file: Option<PathBuf>,
    /// Mark cookies `Secure` (HTTPS only). Turn off only for plain-HTTP loopback use.
    pub cookie_secure: bool,
    /// Origin the console is reached at (`https://opsmesh.example.com`), checked against the
    /// `Origin` of every state-changing request; unset: the request's own scheme and host.
    pub public_origin: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            users_file: None,
            users_env: None,
            signin_link_file: None,
            trusted_user_header: None,
            trusted_proxies: Vec::new(),
            proxy_approvers: Vec::new(),
            max_sessions: 10_000,
            login_failures_per_peer: 10,
            login_failure_window: Duration::from_secs(300),
            max_login_peers: 10_000,
            session_ttl: Duration::from_secs(12 * 3600),
            session_key_file: None,
            cookie_secure: true,
            public_origin: None,
        }
    }
}

impl Validate for ConsoleConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, problem: &str| ConfigError::invalid(format!("{prefix}.{key}"), problem);
        if !self.enabled {
            return Ok(());
        }
        if self.users_file.is_none()
            && self.users_env.is_none()
            && self.signin_link_file.is_none()
            && self.trusted_user_header.is_none()
        {
            return Err(invalid(
                "users_file",
                "the console needs users_file, users_env, signin_link_file or trusted_user_header",
            ));
        }
        if let Some(header) = &self.trusted_user_header
            && (header.is_empty()
                || !header
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(invalid("trusted_user_header", "must be a header name"));
        }
        if self.trusted_user_header.is_some() && self.trusted_proxies.is_empty() {
            return Err(invalid(
                "trusted_proxies",
                &format!(
                    "must list the authenticating proxy's addresses when {prefix}.trusted_user_header is set (otherwise any peer could sign in as anyone by sending that header)"
                ),
            ));
        }
        if self.trusted_user_header.is_none() && !self.proxy_approvers.is_empty() {
            return Err(invalid(
                "proxy_approvers",
                &format!("needs {prefix}.trusted_user_header"),
            ));
        }
        if self.max_sessions == 0 {
            return Err(invalid("max_sessions", "must be at least 1"));
        }
        if self.login_failures_per_peer == 0 {
            return Err(invalid("login_failures_per_peer", "must be at least 1"));
        }
        if self.login_failure_window.is_zero() {
            return Err(invalid("login_failure_window", "must be > 0"));
        }
        if self.max_login_peers == 0 {
            return Err(invalid("max_login_peers", "must be at least 1"));
        }
        if self.session_ttl < Duration::from_secs(60) {
            return Err(invalid("session_ttl", "must be at least 1m"));
        }
        if let Some(origin) = &self.public_origin {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin.matches('/').count() == 2;
            if !ok {
                return Err(invalid(
                    "public_origin",
                    "must be scheme://host[:port] without a path",
                ));
            }
        }
        if let Some(path) = &self.session_key_file {
            let key = std::fs::read(path)
                .map_err(|e| invalid("session_key_file", &format!("{}: {e}", path.display())))?;
            if key.trim_ascii().len() < 32 {
                return Err(invalid("session_key_file", "must hold at least 32 bytes"));
            }
        }
        Ok(())
    }
}
