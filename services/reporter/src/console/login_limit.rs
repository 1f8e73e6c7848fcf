//! Failed sign-ins per peer: after `login_failures_per_peer` bad tokens within
//! `login_failure_window`, a peer's sign-ins are refused until the window has passed, so
//! tokens cannot be guessed at line rate. The table of peers is bounded (`max_login_peers`):
//! a full table forgets the peer whose window started first, counted as evicted.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::{IntCounter, Registry};

use opsmesh_runtime::metrics::register;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    max_peers: usize,
    peers: Mutex<HashMap<IpAddr, Failures>>,
    evicted: IntCounter,
    refused: IntCounter,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration, max_peers: usize, registry: &Registry) -> Self {
        Self {
            max_failures,
            window,
            max_peers,
            peers: Mutex::new(HashMap::new()),
            evicted: register(
                registry,
                IntCounter::new(
                    "reporter_console_login_peers_evicted_total",
                    "Peers with failed console sign-ins forgotten because reporter.console.max_login_peers were tracked",
                )
                .expect("valid metric"),
            ),
            refused: register(
                registry,
                IntCounter::new(
                    "reporter_console_logins_throttled_total",
                    "Console sign-ins refused because the peer failed too often (login_failures_per_peer)",
                )
                .expect("valid metric"),
            ),
        }
    }

    /// How long `peer` must wait before signing in again, if it must.
    pub fn wait(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let peers = self.lock();
        let failures = peers.get(&peer)?;
        let elapsed = now.saturating_duration_since(failures.since);
        if failures.count >= self.max_failures && elapsed < self.window {
            self.refused.inc();
            Some(self.window - elapsed)
        } else {
            None
        }
    }

    /// Counts a bad token from `peer`.
    pub fn failed(&self, peer: IpAddr, now: Instant) {
        let mut peers = self.lock();
        peers.retain(|_, f| now.saturating_duration_since(f.since) < self.window);
        if !peers.contains_key(&peer) {
            while peers.len() >= self.max_peers {
                let Some(oldest) = peers.iter().min_by_key(|(_, f)| f.since).map(|(p, _)| *p)
                else {
                    break;
                };
                peers.remove(&oldest);
                self.evicted.inc();
            }
        }
        peers
            .entry(peer)
            .or_insert(Failures {
                count: 0,
                since: now,
            })
            .count += 1;
    }

    /// A good token from `peer` clears its failures.
    pub fn succeeded(&self, peer: IpAddr) {
        self.lock().remove(&peer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_throttled_within_the_window_and_the_table_is_bounded() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60), 2, &Registry::new());
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        let start = Instant::now();
        limiter.failed(a, start);
        assert_eq!(limiter.wait(a, start), None, "one failure is allowed");
        limiter.failed(a, start);
        let wait = limiter.wait(a, start + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(limiter.wait(a, start + Duration::from_secs(60)), None);
        assert_eq!(limiter.refused.get(), 1);

        limiter.failed(b, start + Duration::from_secs(1));
        limiter.failed(c, start + Duration::from_secs(2));
        assert_eq!(limiter.evicted.get(), 1, "a, the oldest, was forgotten");
        assert_eq!(limiter.wait(a, start + Duration::from_secs(3)), None);
        limiter.succeeded(b);
        assert!(!limiter.lock().contains_key(&b));
    }
}
