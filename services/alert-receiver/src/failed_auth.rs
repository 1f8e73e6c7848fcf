//! Failed authentications per peer address: a peer that fails `max_failures` times within a
//! window is answered `429` for the rest of that window, before its credentials are even
//! looked at, so guessing a token or secret costs a window per `max_failures` guesses.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::Instant,
};

use actix_web::HttpRequest;

use crate::{config::FailedAuthConfig, metrics::TableMetrics};

/// The peer is locked out: retry after this many seconds.
pub struct LockedOut {
    pub retry_after_secs: u64,
}

/// One peer's failures in its current window.
struct Strikes {
    window_start: Instant,
    failures: u32,
}

#[derive(Default)]
struct Peers {
    by_address: HashMap<IpAddr, Strikes, foldhash::fast::RandomState>,
    /// Window starts, oldest first, to expire and evict in order. An entry whose peer has
    /// since started a newer window is stale and skipped.
    order: VecDeque<(Instant, IpAddr)>,
}

pub struct FailedAuth {
    config: FailedAuthConfig,
    peers: Mutex<Peers>,
    metrics: TableMetrics,
}

impl FailedAuth {
    pub fn new(config: FailedAuthConfig, metrics: TableMetrics) -> Self {
        Self {
            config,
            peers: Mutex::new(Peers::default()),
            metrics,
        }
    }

    fn enabled(&self) -> bool {
        self.config.max_failures > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address failures are counted against: the connection's peer, or, when that is a
    /// trusted proxy, the last `X-Forwarded-For` address that is not one. `None` when the
    /// connection has no IP peer (the limit then does not apply).
    pub fn peer_of(&self, request: &HttpRequest) -> Option<IpAddr> {
        let peer = request.peer_addr()?.ip();
        if !self.config.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        // Rightmost first: the entries a trusted proxy appended; what lies left of the first
        // untrusted one was written by the client and proves nothing.
        forwarded
            .iter()
            .rev()
            .map(|text| text.parse::<IpAddr>().ok())
            .find(|address| address.is_none_or(|a| !self.config.trusted_proxies.contains(&a)))
            .flatten()
            .or(Some(peer))
    }

    /// `Err` while `peer` is locked out.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), LockedOut> {
        let Some(peer) = peer.filter(|_| self.enabled()) else {
            return Ok(());
        };
        let peers = self.lock();
        match peers.by_address.get(&peer) {
            Some(strikes) if strikes.failures >= self.config.max_failures => {
                let elapsed = strikes.window_start.elapsed();
                match self.config.window.checked_sub(elapsed) {
                    Some(left) if !left.is_zero() => Err(LockedOut {
                        retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64,
                    }),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication of `peer`.
    pub fn record_failure(&self, peer: Option<IpAddr>) {
        let Some(peer) = peer.filter(|_| self.enabled()) else {
            return;
        };
        let now = Instant::now();
        let mut guard = self.lock();
        let Peers { by_address, order } = &mut *guard;
        self.expire(by_address, order, now);
        match by_address.get_mut(&peer) {
            Some(strikes) if now.duration_since(strikes.window_start) < self.config.window => {
                strikes.failures = strikes.failures.saturating_add(1);
            }
            _ => {
                by_address.insert(
                    peer,
                    Strikes {
                        window_start: now,
                        failures: 1,
                    },
                );
                order.push_back((now, peer));
            }
        }
        self.metrics.entries.set(by_address.len() as i64);
    }

    /// Drops peers whose window ended, and the oldest beyond `max_peers` (counted: a full
    /// table means someone is failing from very many addresses).
    fn expire(
        &self,
        by_address: &mut HashMap<IpAddr, Strikes, foldhash::fast::RandomState>,
        order: &mut VecDeque<(Instant, IpAddr)>,
        now: Instant,
    ) {
        while let Some(&(start, peer)) = order.front() {
            let current = by_address
                .get(&peer)
                .is_some_and(|strikes| strikes.window_start == start);
            let expired = now.duration_since(start) >= self.config.window;
            if current && !expired && by_address.len() < self.config.max_peers {
                break;
            }
            order.pop_front();
            if current {
                by_address.remove(&peer);
                if !expired {
                    self.metrics.evictions.inc();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(
        max_failures: u32,
        window: Duration,
        max_peers: usize,
    ) -> (FailedAuth, TableMetrics) {
        let metrics = crate::metrics::ReceiverMetrics::new(&prometheus::Registry::new())
            .table("failed_auth_peers");
        let config = FailedAuthConfig {
            max_failures,
            window,
            max_peers,
            trusted_proxies: Vec::new(),
        };
        (FailedAuth::new(config, metrics.clone()), metrics)
    }

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::from(n.to_be_bytes()))
    }

    #[test]
    fn a_peer_is_locked_out_after_its_failures_until_the_window_ends() {
        let (limiter, _) = limiter(3, Duration::from_millis(300), 10);
        for _ in 0..3 {
            assert!(limiter.check(ip(1)).is_ok());
            limiter.record_failure(ip(1));
        }
        let Err(locked) = limiter.check(ip(1)) else {
            panic!("locked out")
        };
        assert_eq!(locked.retry_after_secs, 1, "rounded up to a whole second");
        assert!(limiter.check(ip(2)).is_ok(), "other peers are not");
        std::thread::sleep(Duration::from_millis(350));
        assert!(limiter.check(ip(1)).is_ok(), "the window passed");
    }

    #[test]
    fn the_table_stays_at_its_cap_and_counts_evictions() {
        let (limiter, metrics) = limiter(3, Duration::from_secs(60), 100);
        for n in 0..1000 {
            limiter.record_failure(ip(n));
        }
        assert_eq!(limiter.lock().by_address.len(), 100);
        assert_eq!(metrics.entries.get(), 100);
        assert_eq!(metrics.evictions.get(), 900);
    }

    #[test]
    fn zero_failures_turns_the_limit_off() {
        let (limiter, metrics) = limiter(0, Duration::from_secs(60), 100);
        for _ in 0..10 {
            limiter.record_failure(ip(1));
        }
        assert!(limiter.check(ip(1)).is_ok());
        assert_eq!(metrics.entries.get(), 0);
    }
}
