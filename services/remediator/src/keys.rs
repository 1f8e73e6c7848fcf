//! The remediator's keys: the private key it signs ledger records and chain heads with, and
//! the reporters' public keys approvals must be signed by.

use opsmesh_proto::{
    Envelope,
    approval::{Approval, signed_bytes},
};
use opsmesh_runtime::{
    ConfigError,
    signing::{SignatureError, Signer, Verifier},
};

use crate::config::RemediatorConfig;

#[derive(Debug, Default)]
pub struct Keys {
    pub ledger: Option<Signer>,
    pub approvals: Option<Verifier>,
}

/// Why an approval is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedApproval {
    #[error("no approval keys are configured (remediator.approvals.verify_keys)")]
    NoKeys,
    #[error("{0}")]
    Signature(#[from] SignatureError),
}

impl Keys {
    /// Loads the keys configured under `prefix` (the remediator's section).
    pub fn load(config: &RemediatorConfig, prefix: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            ledger: Signer::load(
                &format!("{prefix}.ledger.signing_key"),
                &config.ledger.signing_key,
            )?,
            approvals: Verifier::load(
                &format!("{prefix}.approvals.verify_keys"),
                &config.approvals.verify_keys,
            )?,
        })
    }

    /// Whether `envelope` is signed by a reporter key this remediator trusts.
    pub fn check_approval(&self, envelope: &Envelope<Approval>) -> Result<(), UntrustedApproval> {
        let keys = self.approvals.as_ref().ok_or(UntrustedApproval::NoKeys)?;
        keys.verify(&signed_bytes(envelope), envelope.payload.signature.as_ref())?;
        Ok(())
    }
}
