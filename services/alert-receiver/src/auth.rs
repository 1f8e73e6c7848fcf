//! Who sent this alert: HMAC-SHA256 signatures (`X-Opsmesh-Signature: t=<unix>,v1=<hex>` over
//! `"<t>.<raw body>"`), bearer tokens, or a token in the path for Splunk's built-in Webhook.
//! Comparisons are constant-time; secrets are never logged or echoed.

use std::{
    collections::{HashSet, VecDeque},
    num::NonZeroU32,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use actix_web::http::{StatusCode, header::HeaderMap};
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use opsmesh_runtime::{ConfigError, problem::Problem};

use crate::config::{ReceiverConfig, SourceConfig};

pub const SIGNATURE_HEADER: &str = "X-Opsmesh-Signature";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send X-Opsmesh-Signature or Authorization: Bearer")]
    Missing,
    #[error("malformed X-Opsmesh-Signature: {0}")]
    Malformed(&'static str),
    #[error("signature does not match any active secret")]
    BadSignature,
    #[error(
        "signature timestamp is {age_secs} s away from now; the replay window is {window_secs} s"
    )]
    Expired { age_secs: i64, window_secs: u64 },
    #[error("this signature was already used")]
    Replayed,
    #[error("bearer token not recognised")]
    BadToken,
    #[error("path token not recognised")]
    BadPathToken,
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "auth_missing",
            Self::Malformed(_) => "auth_malformed",
            Self::BadSignature => "auth_bad_signature",
            Self::Expired { .. } => "auth_expired",
            Self::Replayed => "auth_replayed",
            Self::BadToken | Self::BadPathToken => "auth_bad_token",
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            _ => (StatusCode::FORBIDDEN, "forbidden", "Credentials refused"),
        };
        Problem::new(status, slug, title, self.to_string())
    }
}

/// Secrets from a file (re-read when it changes) and/or an environment variable.
struct SecretList {
    file: Option<PathBuf>,
    from_env: Vec<String>,
    /// How often the file's modification time is looked at: not on every request.
    recheck: Duration,
    active: RwLock<Active>,
}

struct Active {
    /// The file's modification time when last read, and when that was last compared.
    mtime: Option<SystemTime>,
    checked: Instant,
    /// Every active value (environment first). Shared, so a request does not copy them.
    values: Arc<[Secret]>,
}

/// One secret, with the HMAC key schedule computed when it is loaded rather than on every
/// request (two SHA-256 blocks each time).
struct Secret {
    text: String,
    hmac: Hmac<Sha256>,
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        let hmac = Hmac::new_from_slice(text.as_bytes()).expect("HMAC accepts any key length");
        Self { text, hmac }
    }
}

fn split_secrets(text: &str, separators: &[char]) -> Vec<String> {
    text.split(separators)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl SecretList {
    fn load(
        file: Option<&PathBuf>,
        env: Option<&String>,
        recheck: Duration,
        key: &str,
    ) -> Result<Self, ConfigError> {
        let from_env = match env {
            None => Vec::new(),
            Some(var) => {
                let value = std::env::var(var).map_err(|_| {
                    ConfigError::invalid(
                        format!("{key}_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?;
                split_secrets(&value, &[',', '\n'])
            }
        };
        let list = Self {
            file: file.cloned(),
            recheck,
            active: RwLock::new(Active {
                mtime: None,
                checked: Instant::now(),
                values: from_env.iter().cloned().map(Secret::from).collect(),
            }),
            from_env,
        };
        if let Some(path) = &list.file {
            let (mtime, values) = read_secret_file(path).map_err(|e| {
                ConfigError::invalid(format!("{key}_file"), format!("{}: {e}", path.display()))
            })?;
            let mut active = list.active.write().expect("lock");
            active.mtime = mtime;
            active.values = list.with_env(values);
        }
        Ok(list)
    }

    fn is_configured(&self) -> bool {
        self.file.is_some() || !self.from_env.is_empty()
    }

    fn with_env(&self, from_file: Vec<String>) -> Arc<[Secret]> {
        self.from_env
            .iter()
            .cloned()
            .chain(from_file)
            .map(Secret::from)
            .collect()
    }

    /// Every active value; a file that changed is re-read within `recheck` (rotation without
    /// restart).
    fn values(&self) -> Arc<[Secret]> {
        let active = self.active.read().expect("lock");
        match &self.file {
            Some(path) if active.checked.elapsed() >= self.recheck => {
                drop(active);
                self.reload_if_changed(path)
            }
            _ => active.values.clone(),
        }
    }

    fn reload_if_changed(&self, path: &PathBuf) -> Arc<[Secret]> {
        let current = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut active = self.active.write().expect("lock");
        active.checked = Instant::now();
        if active.mtime != current {
            match read_secret_file(path) {
                Ok((mtime, values)) => {
                    active.mtime = mtime;
                    active.values = self.with_env(values);
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "keeping the previous secrets")
                }
            }
        }
        active.values.clone()
    }
}

fn read_secret_file(path: &PathBuf) -> std::io::Result<(Option<SystemTime>, Vec<String>)> {
    let text = std::fs::read_to_string(path)?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((mtime, split_secrets(&text, &['\n'])))
}

struct Source {
    name: String,
    signing: SecretList,
    bearer: SecretList,
    path_tokens: SecretList,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// Signatures seen recently, to refuse replays within the window. Each is kept as the first
/// 8 bytes of its MAC, a keyed hash over the timestamp and the body: two different verified
/// requests share them with odds of 2^-64 (at worst a retry refused as a replay), and the
/// table, probed on every request, is a fifth of the size (about 1 MiB at 100k entries).
struct SeenSignatures {
    capacity: usize,
    set: HashSet<u64, foldhash::fast::RandomState>,
    /// `(timestamp, short MAC)`, oldest first.
    order: VecDeque<(i64, u64)>,
}

/// A signed request's identity: its timestamp and the MAC that verified. Keyed on the MAC
/// rather than the header text, so padding the header with extra candidates or spaces does
/// not make a replay look new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureId {
    timestamp: i64,
    mac: Tag,
}

impl SignatureId {
    fn short(&self) -> u64 {
        u64::from_le_bytes(self.mac[..8].try_into().expect("a MAC has 32 bytes"))
    }
}

/// An HMAC-SHA256 tag.
type Tag = [u8; 32];

/// The sender of a request, and its signature when it was signed.
#[derive(Debug, Clone)]
pub struct Authenticated<'a> {
    pub source: &'a str,
    pub signature: Option<SignatureId>,
}

impl<'a> Authenticated<'a> {
    fn unsigned(source: &'a str) -> Self {
        Self {
            source,
            signature: None,
        }
    }
}

pub struct Authenticator {
    sources: Vec<Source>,
    replay_window: Duration,
    allow_unauthenticated: bool,
    default_source: String,
    seen: Mutex<SeenSignatures>,
}

/// Too many requests: retry after this many seconds.
pub struct RateLimited {
    pub retry_after_secs: u64,
}

impl Authenticator {
    pub fn new(config: &ReceiverConfig) -> Result<Self, ConfigError> {
        let sources = config
            .sources
            .iter()
            .map(|(name, source)| build_source(name, source, config.secrets_recheck))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            sources,
            replay_window: config.replay_window,
            allow_unauthenticated: config.allow_unauthenticated,
            default_source: config.source_name.clone(),
            seen: Mutex::new(SeenSignatures {
                capacity: config.dedup_capacity.max(1),
                set: HashSet::default(),
                order: VecDeque::new(),
            }),
        })
    }

    /// The source whose credentials the request carries.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Authenticated<'_>, AuthError> {
        if let Some(signature) = headers.get(SIGNATURE_HEADER) {
            let signature = signature
                .to_str()
                .map_err(|_| AuthError::Malformed("not ASCII"))?;
            return self.verify_signature(signature, body);
        }
        if let Some(authorization) = headers.get(actix_web::http::header::AUTHORIZATION) {
            let token = authorization
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(AuthError::BadToken)?;
            return self
                .sources
                .iter()
                .find(|s| matches_any(&s.bearer, token))
                .map(|s| Authenticated::unsigned(&s.name))
                .ok_or(AuthError::BadToken);
        }
        if self.allow_unauthenticated {
            return Ok(Authenticated::unsigned(&self.default_source));
        }
        Err(AuthError::Missing)
    }

    /// `None` when the source has no path token configured (the route then does not exist).
    pub fn authenticate_path(
        &self,
        source: &str,
        token: &str,
    ) -> Option<Result<Authenticated<'_>, AuthError>> {
        let source = self
            .sources
            .iter()
            .find(|s| s.name == source && s.path_tokens.is_configured())?;
        Some(if matches_any(&source.path_tokens, token) {
            Ok(Authenticated::unsigned(&source.name))
        } else {
            Err(AuthError::BadPathToken)
        })
    }

    pub fn check_rate(&self, source: &str) -> Result<(), RateLimited> {
        let Some(limiter) = self
            .sources
            .iter()
            .find(|s| s.name == source)
            .and_then(|s| s.limiter.as_ref())
        else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| RateLimited {
            retry_after_secs: not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1),
        })
    }

    fn verify_signature(&self, header: &str, body: &[u8]) -> Result<Authenticated<'_>, AuthError> {
        let (timestamp, candidates) = parse_signature_header(header)?;
        let now = chrono::Utc::now().timestamp();
        let window = self.replay_window.as_secs() as i64;
        if (now - timestamp).abs() > window {
            return Err(AuthError::Expired {
                age_secs: now - timestamp,
                window_secs: window as u64,
            });
        }
        let signed_text = timestamp.to_string();
        let (source, mac) = self
            .sources
            .iter()
            .find_map(|source| {
                source.signing.values().iter().find_map(|secret| {
                    let mut mac = secret.hmac.clone();
                    mac.update(signed_text.as_bytes());
                    mac.update(b".");
                    mac.update(body);
                    let expected: Tag = mac.finalize().into_bytes().into();
                    candidates
                        .iter()
                        .any(|candidate| bool::from(candidate.ct_eq(&expected)))
                        .then_some((source, expected))
                })
            })
            .ok_or(AuthError::BadSignature)?;
        let id = SignatureId { timestamp, mac };
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.set.contains(&id.short()) {
            return Err(AuthError::Replayed);
        }
        Ok(Authenticated {
            source: &source.name,
            signature: Some(id),
        })
    }

    /// Records the signature of a request whose alerts were stored, so the same signed
    /// request sent again within the window is refused. Only accepted requests count: a
    /// sender retrying a request that failed (503) may resend it unchanged.
    pub fn remember(&self, signature: SignatureId) {
        let oldest_valid = chrono::Utc::now().timestamp() - self.replay_window.as_secs() as i64;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(timestamp, old)) = seen.order.front() {
            if timestamp >= oldest_valid && seen.order.len() < seen.capacity {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&old);
        }
        let short = signature.short();
        if seen.set.insert(short) {
            seen.order.push_back((signature.timestamp, short));
        }
    }
}

/// `t=<unix>,v1=<hex>[,v1=<hex>…]` → the timestamp and the candidate MACs.
pub(crate) fn parse_signature_header(header: &str) -> Result<(i64, Vec<Tag>), AuthError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                let t = t
                    .parse::<i64>()
                    .map_err(|_| AuthError::Malformed("t is not a unix time"))?;
                timestamp = Some(t);
            }
            Some(("v1", hex)) => {
                let mut mac = Tag::default();
                hex::decode_to_slice(hex, &mut mac)
                    .map_err(|_| AuthError::Malformed("v1 is not 64 hex digits (HMAC-SHA256)"))?;
                candidates.push(mac);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(AuthError::Malformed("missing t="))?;
    if candidates.is_empty() {
        return Err(AuthError::Malformed("missing v1="));
    }
    Ok((timestamp, candidates))
}

fn matches_any(list: &SecretList, presented: &str) -> bool {
    // Evaluate every candidate so timing does not reveal which one (or how many) matched.
    list.values().iter().fold(false, |found, secret| {
        found | bool::from(secret.text.as_bytes().ct_eq(presented.as_bytes()))
    })
}

fn build_source(
    name: &str,
    config: &SourceConfig,
    recheck: Duration,
) -> Result<Source, ConfigError> {
    let key = |field: &str| format!("receiver.sources.{name}.{field}");
    let limiter = NonZeroU32::new(config.rate_limit_per_second).map(|rate| {
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
        RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    });
    Ok(Source {
        name: name.to_owned(),
        signing: SecretList::load(
            config.secrets_file.as_ref(),
            config.secrets_env.as_ref(),
            recheck,
            &key("secrets"),
        )?,
        bearer: SecretList::load(
            config.bearer_tokens_file.as_ref(),
            config.bearer_tokens_env.as_ref(),
            recheck,
            &key("bearer_tokens"),
        )?,
        path_tokens: SecretList::load(
            config.path_token_file.as_ref(),
            config.path_token_env.as_ref(),
            recheck,
            &key("path_token"),
        )?,
        limiter,
    })
}

/// `t=<unix>,v1=<hex>` for `body` signed with `secret` (senders, tests, benchmarks).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}
