//! Failed authentications per peer, at every door that takes a token: the console's sign-in
//! form and `Authorization: Bearer` on `/api` and the console's pages (one limiter, the users
//! file's tokens), and `/mcp` (one limiter, the MCP tokens). After `max_failures` bad tokens
//! within `window`, the peer's token attempts are refused (`429`, `Retry-After`) until that
//! window has passed, even with a valid token, so tokens cannot be guessed at line rate. A
//! good token does not clear the count: a viewer could otherwise guess an approver's token
//! between sign-ins of their own.
//!
//! The peer is the connection's address or, from `trusted_proxies`, the rightmost
//! `X-Forwarded-For` address that is not a trusted proxy. The table of peers is bounded
//! (`max_peers`): beyond it the peer whose window started first is forgotten, counted.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use actix_web::{HttpRequest, http::StatusCode};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use opsmesh_runtime::{
    metrics::{counter_vec, register},
    problem::Problem,
};

/// How many bad tokens a peer may give, within what window, and how many peers are tracked.
#[derive(Debug, Clone)]
pub struct FailedAuthLimits {
    pub max_failures: u32,
    pub window: Duration,
    pub max_peers: usize,
    /// Proxies whose `X-Forwarded-For` names the peer.
    pub trusted_proxies: Vec<IpAddr>,
}

/// The limiters' metrics, labelled by door (`console`, `mcp`).
#[derive(Clone)]
pub struct FailedAuthMetrics {
    throttled: IntCounterVec,
    evicted: IntCounterVec,
    peers: IntGaugeVec,
}

impl FailedAuthMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| counter_vec(registry, name, help, &["door"]);
        Self {
            throttled: counter(
                "reporter_failed_auth_throttled_total",
                "Token attempts refused (429) because the peer gave too many bad tokens",
            ),
            evicted: counter(
                "reporter_failed_auth_peers_evicted_total",
                "Peers with failed authentications forgotten because the table was full",
            ),
            peers: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "reporter_failed_auth_peers",
                        "Peers with failed authentications tracked",
                    ),
                    &["door"],
                )
                .expect("valid gauge"),
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

#[derive(Default)]
struct Peers {
    by_address: HashMap<IpAddr, Failures>,
    /// Window starts, oldest first, to expire and evict in order; an entry whose peer has
    /// started a newer window since is stale and skipped.
    order: VecDeque<(Instant, IpAddr)>,
}

pub struct FailedAuthLimiter {
    limits: FailedAuthLimits,
    peers: Mutex<Peers>,
    throttled: IntCounter,
    evicted: IntCounter,
    tracked: IntGauge,
}

impl FailedAuthLimiter {
    pub fn new(door: &str, limits: FailedAuthLimits, metrics: &FailedAuthMetrics) -> Self {
        Self {
            limits,
            peers: Mutex::new(Peers::default()),
            throttled: metrics.throttled.with_label_values(&[door]),
            evicted: metrics.evicted.with_label_values(&[door]),
            tracked: metrics.peers.with_label_values(&[door]),
        }
    }

    /// The address failures are counted against (`None`: no IP peer, not limited).
    pub fn peer_of(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let trusted = &self.limits.trusted_proxies;
        if !trusted.contains(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        // Rightmost first: what the trusted proxies appended. Left of the first untrusted
        // address is whatever the client wrote.
        forwarded
            .iter()
            .rev()
            .map(|text| text.parse::<IpAddr>().ok())
            .find(|address| address.is_none_or(|a| !trusted.contains(&a)))
            .flatten()
            .or(Some(peer))
    }

    /// How long `peer` must wait before giving a token again, if it must (counted).
    pub fn wait(&self, peer: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let peers = self.lock();
        let failures = peers.by_address.get(&peer?)?;
        let elapsed = now.saturating_duration_since(failures.since);
        if failures.count >= self.limits.max_failures && elapsed < self.limits.window {
            self.throttled.inc();
            Some(self.limits.window - elapsed)
        } else {
            None
        }
    }

    /// Counts a bad token from `peer`; true when that locks the peer out.
    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Some(peer) = peer else {
            return false;
        };
        let mut guard = self.lock();
        let Peers { by_address, order } = &mut *guard;
        while let Some(&(since, oldest)) = order.front() {
            let current = by_address.get(&oldest).is_some_and(|f| f.since == since);
            let expired = now.saturating_duration_since(since) >= self.limits.window;
            let full = by_address.len() >= self.limits.max_peers && !by_address.contains_key(&peer);
            if current && !expired && !full {
                break;
            }
            order.pop_front();
            if current {
                by_address.remove(&oldest);
                if !expired {
                    self.evicted.inc();
                }
            }
        }
        let failures = match by_address.get_mut(&peer) {
            Some(failures)
                if now.saturating_duration_since(failures.since) < self.limits.window =>
            {
                failures.count = failures.count.saturating_add(1);
                *failures
            }
            _ => {
                let fresh = Failures {
                    count: 1,
                    since: now,
                };
                by_address.insert(peer, fresh);
                order.push_back((now, peer));
                fresh
            }
        };
        self.tracked.set(by_address.len() as i64);
        failures.count == self.limits.max_failures
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `429` for a peer that must wait `wait` before giving a token again.
pub fn throttled(wait: Duration) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "auth-throttled",
        "Too many failed authentications",
        "this address gave too many invalid tokens; try again later",
    )
    .retry_after(wait.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_failures: u32, max_peers: usize) -> FailedAuthLimiter {
        let limits = FailedAuthLimits {
            max_failures,
            window: Duration::from_secs(60),
            max_peers,
            trusted_proxies: Vec::new(),
        };
        FailedAuthLimiter::new("test", limits, &FailedAuthMetrics::new(&Registry::new()))
    }

    #[test]
    fn peers_are_throttled_within_the_window_and_the_table_is_bounded() {
        let limiter = limiter(2, 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        let start = Instant::now();
        assert!(!limiter.failed(Some(a), start));
        assert_eq!(limiter.wait(Some(a), start), None, "one failure is allowed");
        assert!(limiter.failed(Some(a), start), "the second locks a out");
        let wait = limiter.wait(Some(a), start + Duration::from_secs(10));
        assert_eq!(wait, Some(Duration::from_secs(50)));
        assert_eq!(limiter.wait(Some(a), start + Duration::from_secs(60)), None);
        assert_eq!(limiter.throttled.get(), 1);

        limiter.failed(Some(b), start + Duration::from_secs(1));
        limiter.failed(Some(c), start + Duration::from_secs(2));
        assert_eq!(limiter.evicted.get(), 1, "a, the oldest, was forgotten");
        assert_eq!(limiter.tracked.get(), 2);
        assert_eq!(limiter.wait(Some(a), start + Duration::from_secs(3)), None);
        assert_eq!(limiter.wait(None, start), None, "no address, no limit");
    }

    #[test]
    fn expired_windows_leave_the_table_without_counting_as_evictions() {
        let limiter = limiter(5, 1);
        let start = Instant::now();
        limiter.failed(Some("192.0.2.1".parse().unwrap()), start);
        limiter.failed(
            Some("192.0.2.2".parse().unwrap()),
            start + Duration::from_secs(61),
        );
        assert_eq!(limiter.evicted.get(), 0);
        assert_eq!(limiter.tracked.get(), 1);
    }
}
