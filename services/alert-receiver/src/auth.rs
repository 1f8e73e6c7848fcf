//! Who sent this alert: HMAC-SHA256 signatures (`X-Opsmesh-Signature: t=<unix>,v1=<hex>` over
//! `"<t>.<raw body>"`), bearer tokens, or a token in the path for Splunk's built-in Webhook.
//! Comparisons are constant-time; secrets are never logged or echoed.

use std::{
    collections::{HashSet, VecDeque},
    num::NonZeroU32,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::http::{StatusCode, header::HeaderMap};
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use opsmesh_runtime::{
    ConfigError,
    problem::Problem,
    secret::{Secret, SecretSource},
};

use crate::{
    config::{ReceiverConfig, SourceConfig},
    metrics::TableMetrics,
};

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
        "signature timestamp is {} s away from now; the replay window is {window_secs} s",
        age_secs.map_or_else(|| "more than 2^63".to_owned(), |age| age.to_string())
    )]
    Expired {
        /// Now minus the timestamp; `None` when that does not fit an `i64`.
        age_secs: Option<i64>,
        window_secs: i64,
    },
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

/// The secrets of one kind for one source, from a file (one per line, several during a
/// rotation; re-read when it changes) and/or an environment variable (comma-separated). Both
/// may be set, and then both lists are active.
struct SecretList<T> {
    from_env: Option<Secret<Vec<T>>>,
    from_file: Option<Secret<Vec<T>>>,
}

/// One signing secret, with the HMAC key schedule computed when it is loaded rather than on
/// every request (two SHA-256 blocks each time).
struct SigningKey(Hmac<Sha256>);

impl From<String> for SigningKey {
    fn from(text: String) -> Self {
        Self(Hmac::new_from_slice(text.as_bytes()).expect("HMAC accepts any key length"))
    }
}

/// A secrets file: one per line.
fn lines<T: From<String>>(text: &str) -> Result<Vec<T>, String> {
    split_secrets(text, &['\n'])
}

/// An environment variable: comma-separated (newlines also separate).
fn comma_separated<T: From<String>>(text: &str) -> Result<Vec<T>, String> {
    split_secrets(text, &[',', '\n'])
}

/// An empty list is refused: at start it is a mistake, and in a rotation it is a file caught
/// half-written, which keeps the previous secrets.
fn split_secrets<T: From<String>>(text: &str, separators: &[char]) -> Result<Vec<T>, String> {
    let secrets: Vec<T> = text
        .split(separators)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| T::from(s.to_owned()))
        .collect();
    if secrets.is_empty() {
        return Err("lists no secrets".into());
    }
    Ok(secrets)
}

impl<T: From<String>> SecretList<T> {
    /// `key` is the configuration key without its `_file` / `_env` suffix.
    fn load(
        key: &str,
        file: Option<&Path>,
        env: Option<&str>,
        recheck: Duration,
    ) -> Result<Self, ConfigError> {
        let from_file = Secret::load(key, &SecretSource::from_fields(None, file, None), lines)?;
        let from_env = Secret::load(
            key,
            &SecretSource::from_fields(None, None, env),
            comma_separated,
        )?;
        Ok(Self {
            from_env,
            from_file: from_file.map(|secret| secret.recheck_every(recheck)),
        })
    }

    fn is_configured(&self) -> bool {
        self.from_env.is_some() || self.from_file.is_some()
    }

    /// Every active list (environment first); a changed file is re-read.
    fn current(&self) -> impl Iterator<Item = Arc<Vec<T>>> {
        self.from_env.iter().chain(&self.from_file).map(Secret::get)
    }
}

struct Source {
    name: String,
    signing: SecretList<SigningKey>,
    bearer: SecretList<String>,
    path_tokens: SecretList<String>,
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
    metrics: TableMetrics,
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
    /// `receiver.replay_window` in seconds, at most `i64::MAX`.
    replay_window_secs: i64,
    allow_unauthenticated: bool,
    default_source: String,
    seen: Mutex<SeenSignatures>,
}

/// Too many requests: retry after this many seconds.
pub struct RateLimited {
    pub retry_after_secs: u64,
}

impl Authenticator {
    /// `signatures` counts the replay table's size and early evictions.
    pub fn new(config: &ReceiverConfig, signatures: TableMetrics) -> Result<Self, ConfigError> {
        let sources = config
            .sources
            .iter()
            .map(|(name, source)| build_source(name, source, config.secrets_recheck))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            sources,
            replay_window_secs: i64::try_from(config.replay_window.as_secs()).unwrap_or(i64::MAX),
            allow_unauthenticated: config.allow_unauthenticated,
            default_source: config.source_name.clone(),
            seen: Mutex::new(SeenSignatures {
                capacity: config.replay_capacity.max(1),
                set: HashSet::default(),
                order: VecDeque::new(),
                metrics: signatures,
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
            return self.verify_signature(signature, body, chrono::Utc::now().timestamp());
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

    /// Checks `header` against `body` at unix time `now` (any `i64`: the arithmetic is
    /// checked, so no timestamp a sender writes can overflow it).
    pub(crate) fn verify_signature(
        &self,
        header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Authenticated<'_>, AuthError> {
        let (timestamp, candidates) = parse_signature_header(header)?;
        // `None`: further apart than any i64 can say, so certainly outside the window.
        let age = now.checked_sub(timestamp);
        if age.is_none_or(|age| age.unsigned_abs() > self.replay_window_secs.unsigned_abs()) {
            return Err(AuthError::Expired {
                age_secs: age,
                window_secs: self.replay_window_secs,
            });
        }
        let signed_text = timestamp.to_string();
        let (source, mac) = self
            .sources
            .iter()
            .find_map(|source| {
                source.signing.current().find_map(|keys| {
                    keys.iter().find_map(|key| {
                        let mut mac = key.0.clone();
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
        self.remember_at(signature, chrono::Utc::now().timestamp());
    }

    fn remember_at(&self, signature: SignatureId, now: i64) {
        let oldest_valid = now.saturating_sub(self.replay_window_secs);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let seen = &mut *seen;
        while let Some(&(timestamp, old)) = seen.order.front() {
            let expired = timestamp < oldest_valid;
            if !expired && seen.order.len() < seen.capacity {
                break;
            }
            if !expired {
                seen.metrics.evictions.inc();
            }
            seen.order.pop_front();
            seen.set.remove(&old);
        }
        let short = signature.short();
        if seen.set.insert(short) {
            seen.order.push_back((signature.timestamp, short));
        }
        seen.metrics.entries.set(seen.order.len() as i64);
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

fn matches_any(list: &SecretList<String>, presented: &str) -> bool {
    // Evaluate every candidate so timing does not reveal which one (or how many) matched.
    list.current().fold(false, |found, tokens| {
        tokens.iter().fold(found, |found, token| {
            found | bool::from(token.as_bytes().ct_eq(presented.as_bytes()))
        })
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
            &key("secrets"),
            config.secrets_file.as_deref(),
            config.secrets_env.as_deref(),
            recheck,
        )?,
        bearer: SecretList::load(
            &key("bearer_tokens"),
            config.bearer_tokens_file.as_deref(),
            config.bearer_tokens_env.as_deref(),
            recheck,
        )?,
        path_tokens: SecretList::load(
            &key("path_token"),
            config.path_token_file.as_deref(),
            config.path_token_env.as_deref(),
            recheck,
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

/// Signature verification on untrusted input at an arbitrary clock, for fuzzing: `data` is
/// the clock (8 bytes, big-endian), then the header up to the first newline, then the body.
/// Must never panic; a header this function signs itself must verify within the window.
pub(crate) fn fuzz_signature(data: &[u8]) {
    let Some((clock, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now = i64::from_be_bytes(*clock);
    let (header, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let authenticator = fuzz_authenticator();
    if let Ok(header) = std::str::from_utf8(header) {
        let _ = authenticator.verify_signature(header, body, now);
        if let Ok((timestamp, _)) = parse_signature_header(header) {
            let signed = sign(FUZZ_SECRET, timestamp, body);
            let within = now
                .checked_sub(timestamp)
                .is_some_and(|age| age.unsigned_abs() <= FUZZ_WINDOW_SECS);
            let verified = authenticator.verify_signature(&signed, body, now);
            // A replay verified its MAC: an earlier input signed the same timestamp and body.
            let accepted = matches!(verified, Ok(_) | Err(AuthError::Replayed));
            assert_eq!(accepted, within, "t={timestamp} now={now}: {verified:?}");
            if let Ok(Authenticated {
                signature: Some(id),
                ..
            }) = verified
            {
                authenticator.remember_at(id, now);
            }
        }
    }
}

const FUZZ_SECRET: &str = "fuzz-secret";
const FUZZ_WINDOW_SECS: u64 = 300;

/// One source signing with [`FUZZ_SECRET`]; built once per process.
fn fuzz_authenticator() -> &'static Authenticator {
    static AUTHENTICATOR: std::sync::OnceLock<Authenticator> = std::sync::OnceLock::new();
    AUTHENTICATOR.get_or_init(|| {
        let config = ReceiverConfig {
            replay_window: Duration::from_secs(FUZZ_WINDOW_SECS),
            replay_capacity: 1000,
            ..ReceiverConfig::default()
        };
        let source = Source {
            name: "fuzz".into(),
            signing: SecretList {
                from_env: Some(Secret::fixed(
                    "fuzz.secrets",
                    vec![SigningKey::from(FUZZ_SECRET.to_owned())],
                    lines,
                )),
                from_file: None,
            },
            bearer: SecretList {
                from_env: None,
                from_file: None,
            },
            path_tokens: SecretList {
                from_env: None,
                from_file: None,
            },
            limiter: None,
        };
        let mut authenticator = Authenticator::new(
            &config,
            crate::metrics::ReceiverMetrics::new(&prometheus::Registry::new()).table("signatures"),
        )
        .expect("no sources to load");
        authenticator.sources.push(source);
        authenticator
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"sid":"s"}"#;

    #[test]
    fn extreme_timestamps_are_expired_not_overflowed() {
        let authenticator = fuzz_authenticator();
        for (t, now) in [
            (i64::MIN, 0),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (i64::MAX, -1),
            (0, i64::MIN),
            (i64::MIN + 1, 1),
        ] {
            let header = sign(FUZZ_SECRET, t, BODY);
            match authenticator.verify_signature(&header, BODY, now) {
                Err(AuthError::Expired { .. }) => {}
                other => panic!("t={t} now={now}: {other:?}"),
            }
        }
        let far = AuthError::Expired {
            age_secs: None,
            window_secs: 300,
        };
        assert!(far.to_string().contains("more than 2^63"), "{far}");
    }

    #[test]
    fn signatures_verify_at_the_ends_of_time_within_the_window() {
        let authenticator = fuzz_authenticator();
        for (t, now) in [
            (i64::MAX, i64::MAX),
            (i64::MIN, i64::MIN + 300),
            (i64::MAX - 300, i64::MAX),
        ] {
            let header = sign(FUZZ_SECRET, t, BODY);
            let verified = authenticator.verify_signature(&header, BODY, now);
            let id = verified.expect("within the window").signature.unwrap();
            // Remembering it at the end of time must not overflow either.
            authenticator.remember_at(id, now);
        }
        let header = sign(FUZZ_SECRET, i64::MAX - 301, BODY);
        assert!(matches!(
            authenticator.verify_signature(&header, BODY, i64::MAX),
            Err(AuthError::Expired {
                age_secs: Some(301),
                ..
            })
        ));
    }

    #[test]
    fn timestamps_that_do_not_fit_are_malformed() {
        for header in [
            "t=9223372036854775808,v1=00",
            "t=-9223372036854775809,v1=00",
            "t=1e3,v1=00",
        ] {
            assert!(matches!(
                parse_signature_header(header),
                Err(AuthError::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_full_replay_table_forgets_the_oldest_and_counts_it() {
        let metrics =
            crate::metrics::ReceiverMetrics::new(&prometheus::Registry::new()).table("signatures");
        let config = ReceiverConfig {
            replay_capacity: 5,
            ..ReceiverConfig::default()
        };
        let authenticator = Authenticator::new(&config, metrics.clone()).unwrap();
        let now = 1_700_000_000;
        for n in 0..20u8 {
            let id = SignatureId {
                timestamp: now,
                mac: [n; 32],
            };
            authenticator.remember_at(id, now);
        }
        assert_eq!(metrics.entries.get(), 5);
        assert_eq!(metrics.evictions.get(), 15);
        let seen = authenticator.seen.lock().unwrap();
        assert_eq!(seen.set.len(), 5);
    }

    #[test]
    fn unusable_secret_sources_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n\n").unwrap();
        let missing = dir.path().join("missing");
        let cases = [
            (
                SourceConfig {
                    secrets_file: Some(empty),
                    ..SourceConfig::default()
                },
                "`receiver.sources.s.secrets_file`: lists no secrets".to_owned(),
            ),
            (
                SourceConfig {
                    path_token_file: Some(missing.clone()),
                    ..SourceConfig::default()
                },
                format!(
                    "`receiver.sources.s.path_token_file`: {}",
                    missing.display()
                ),
            ),
            (
                SourceConfig {
                    bearer_tokens_env: Some("OPSMESH_TEST_SURELY_UNSET_VARIABLE".into()),
                    ..SourceConfig::default()
                },
                "`receiver.sources.s.bearer_tokens_env`: environment variable \
                 OPSMESH_TEST_SURELY_UNSET_VARIABLE is not set"
                    .to_owned(),
            ),
        ];
        for (source, expected) in cases {
            let mut config = ReceiverConfig::default();
            config.sources.insert("s".into(), source);
            let metrics = crate::metrics::ReceiverMetrics::new(&prometheus::Registry::new())
                .table("signatures");
            let err = Authenticator::new(&config, metrics)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(&expected), "{err}");
        }
    }

    #[test]
    fn fuzz_input_round_trips() {
        let mut data = 1_700_000_000i64.to_be_bytes().to_vec();
        data.extend_from_slice(b"t=1700000100,v1=00\n{}");
        fuzz_signature(&data);
        let mut data = i64::MIN.to_be_bytes().to_vec();
        data.extend_from_slice(b"t=9223372036854775807,v1=00");
        fuzz_signature(&data);
    }
}
