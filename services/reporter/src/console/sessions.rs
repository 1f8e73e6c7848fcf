//! Console sessions held server-side: the signed cookie only names a session, and a session
//! counts only while it is in this table, so signing out ends it at once (a copied cookie
//! replayed afterwards is refused) and a full table evicts instead of growing.

use std::{collections::HashMap, sync::Mutex};

use prometheus::{IntCounter, IntGauge, Registry};

use opsmesh_runtime::metrics::register;

use crate::auth::Credential;

/// What the server remembers of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub user: String,
    /// The token the session was opened with: the session ends when it leaves the users file.
    pub credential: Credential,
    pub expires: u64,
}

/// The next opening number, and each open session by nonce with its opening number.
type Open = (u64, HashMap<String, (OpenSession, u64)>);

/// Open sessions by nonce, at most `max` of them.
pub struct SessionTable {
    max: usize,
    /// Each session with its opening order (sessions opened within one second expire alike).
    open: Mutex<Open>,
    evicted: IntCounter,
    gauge: IntGauge,
}

impl SessionTable {
    pub fn new(max: usize, registry: &Registry) -> Self {
        Self {
            max,
            open: Mutex::new((0, HashMap::new())),
            evicted: register(
                registry,
                IntCounter::new(
                    "reporter_console_sessions_evicted_total",
                    "Console sessions ended early because reporter.console.max_sessions were open",
                )
                .expect("valid metric"),
            ),
            gauge: register(
                registry,
                IntGauge::new(
                    "reporter_console_sessions",
                    "Console sessions open on this replica",
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Opens a session; when the table is full, expired sessions go first, then the ones
    /// closest to expiry (the oldest opened first), each counted as evicted.
    pub fn open(&self, nonce: String, session: OpenSession, now: u64) {
        let mut guard = self.lock();
        let (opened, open) = &mut *guard;
        open.retain(|_, (s, _)| s.expires > now);
        while open.len() >= self.max {
            let Some(oldest) = open
                .iter()
                .min_by_key(|(_, (s, order))| (s.expires, *order))
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            open.remove(&oldest);
            self.evicted.inc();
        }
        *opened += 1;
        open.insert(nonce, (session, *opened));
        self.gauge.set(open.len() as i64);
    }

    /// The session `nonce` names, while open and unexpired.
    pub fn get(&self, nonce: &str, now: u64) -> Option<OpenSession> {
        self.lock()
            .1
            .get(nonce)
            .map(|(s, _)| s)
            .filter(|s| s.expires > now)
            .cloned()
    }

    /// Ends the session `nonce` names (signing out, or its user left the users file).
    pub fn close(&self, nonce: &str) {
        let mut guard = self.lock();
        guard.1.remove(nonce);
        self.gauge.set(guard.1.len() as i64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, expires: u64) -> OpenSession {
        OpenSession {
            user: user.into(),
            credential: [0; 32],
            expires,
        }
    }

    #[test]
    fn a_full_table_evicts_expired_then_oldest_and_counts_it() {
        let table = SessionTable::new(2, &Registry::new());
        table.open("a".into(), session("alice", 100), 10);
        table.open("b".into(), session("bob", 200), 10);
        table.open("c".into(), session("carol", 300), 10);
        assert_eq!(table.get("a", 10), None, "closest to expiry evicted");
        // Alike expiries: the first opened goes.
        let alike = SessionTable::new(2, &Registry::new());
        for nonce in ["x", "y", "z"] {
            alike.open(nonce.into(), session(nonce, 300), 10);
        }
        assert_eq!(alike.get("x", 10), None, "opened first");
        assert!(alike.get("y", 10).is_some() && alike.get("z", 10).is_some());
        assert_eq!(table.evicted.get(), 1);
        assert_eq!(table.get("b", 10).unwrap().user, "bob");
        // At 250 b has expired: it makes room without an eviction.
        table.open("d".into(), session("dave", 400), 250);
        assert_eq!(table.evicted.get(), 1);
        assert_eq!(table.get("c", 250).unwrap().user, "carol");
        assert_eq!(table.get("c", 300), None, "expired");
        table.close("d");
        assert_eq!(table.get("d", 250), None);
        assert_eq!(table.gauge.get(), 1);
    }
}
