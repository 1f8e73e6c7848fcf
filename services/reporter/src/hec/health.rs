//! `/readyz` for the HEC writer: not ready while Splunk refuses the token or configuration
//! (consumption is paused then, and nothing is dropped).

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use opsmesh_runtime::health::ReadinessCheck;

#[derive(Default)]
pub struct HecHealth {
    refused: Mutex<Option<String>>,
}

impl HecHealth {
    /// Splunk refused the token or configuration: `/readyz` fails with `reason`.
    pub fn refused(&self, reason: String) {
        *self.lock() = Some(reason);
    }

    /// Splunk took a request again.
    pub fn accepted(&self) {
        let mut refused = self.lock();
        if refused.take().is_some() {
            tracing::info!("HEC accepts the token again; consumption resumes");
        }
    }

    pub fn refusal(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`ReadinessCheck`] registered on the application's health.
pub struct HecReadiness(pub Arc<HecHealth>);

#[async_trait]
impl ReadinessCheck for HecReadiness {
    fn name(&self) -> &str {
        "hec"
    }

    async fn check(&self) -> Result<(), String> {
        match self.0.refusal() {
            None => Ok(()),
            Some(reason) => Err(format!("{reason}; consumption paused until it is fixed")),
        }
    }
}
