//! Liveness and readiness.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;

/// A dependency `/readyz` asks about.
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    fn name(&self) -> &str;
    async fn check(&self) -> Result<(), String>;
}

/// Readiness of the whole application: every registered check passes and no drain began.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<RwLock<Vec<Arc<dyn ReadinessCheck>>>>,
    draining: Arc<AtomicBool>,
}

/// Result of one `/readyz` evaluation.
#[derive(Debug, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, serde::Serialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Health {
    /// Adds a check to `/readyz`. Register while building the component: the probes that come
    /// before a later registration find the application ready without it.
    pub fn register(&self, check: Arc<dyn ReadinessCheck>) {
        self.checks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(check);
    }

    /// Declares `name` not ready (`waiting` says why) until the returned gate is opened: for
    /// work a component does once it runs (loading its state), declared while it is built so
    /// that `/readyz` is not ready from the very first probe.
    pub fn gate(&self, name: impl Into<String>, waiting: impl Into<String>) -> Gate {
        let gate = Gate(Arc::new(GateCheck {
            name: name.into(),
            waiting: waiting.into(),
            open: AtomicBool::new(false),
        }));
        self.register(gate.0.clone());
        gate
    }

    /// From now on `/readyz` fails, so load balancers stop sending work during the drain.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub async fn readiness(&self) -> Readiness {
        let checks: Vec<_> = self
            .checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut results = Vec::with_capacity(checks.len() + 1);
        if self.draining.load(Ordering::SeqCst) {
            results.push(CheckResult {
                name: "shutdown".into(),
                ok: false,
                error: Some("draining".into()),
            });
        }
        let outcomes = futures::future::join_all(checks.iter().map(|c| c.check())).await;
        for (check, outcome) in checks.iter().zip(outcomes) {
            results.push(CheckResult {
                name: check.name().to_owned(),
                ok: outcome.is_ok(),
                error: outcome.err(),
            });
        }
        Readiness {
            ready: results.iter().all(|r| r.ok),
            checks: results,
        }
    }
}

/// A readiness condition declared up front and met later (see [`Health::gate`]).
#[derive(Clone)]
pub struct Gate(Arc<GateCheck>);

impl Gate {
    /// The condition is met: this check passes from now on.
    pub fn open(&self) {
        self.0.open.store(true, Ordering::SeqCst);
    }
}

struct GateCheck {
    name: String,
    waiting: String,
    open: AtomicBool,
}

#[async_trait]
impl ReadinessCheck for GateCheck {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), String> {
        if self.open.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self.waiting.clone())
        }
    }
}
